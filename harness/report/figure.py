"""What every report figure shares: the palette, the marker per replica count, and the PNG
encoding (matplotlib's Agg canvas on a ``Figure``, never pyplot's global state)."""

from __future__ import annotations

import base64
import io

from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
PHASE_COLORS = {"measure": "#2ca02c", "warmup": "#ff7f0e", "cooldown": "#7f7f7f", "ramp": "#bcbd22"}


def png(fig: Figure) -> str:
    """The figure as a base64 PNG string, for a ``data:`` URI."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def replicas_word(n: int) -> str:
    return f"{n} replica{'s' if n != 1 else ''}"


def latency_label(key: str, unit: str = "ms") -> str:
    """'ttft_p99_s' -> 'TTFT p99 (ms)'."""
    metric, pct, _ = key.split("_")
    return f"{metric.upper() if metric != 'e2e' else 'e2e'} {pct} ({unit})"


def plain_log_ticks(axis: Axis) -> None:
    """A log axis labelled 20, 50, 100, 1,000 (not 2x10^1): ms read as numbers."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
