"""Number formatting shared by the HTML report and the console tables."""

from __future__ import annotations


def ms(v: float | None) -> str:
    """Seconds shown in milliseconds (3 significant digits), '–' when missing."""
    if v is None:
        return "–"
    x = v * 1000
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def num(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    if abs(v) >= 10 ** (digits - 1):
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def interval(c, key: str, fmt=ms) -> str:
    """'low–high' of a cell's 95% interval, '–' without one; an open end (too few requests for
    the percentile, harness.analysis.intervals) shows as '≥max' (or '≤min'): the figure may lie
    beyond the extreme value seen."""
    ci = c.intervals.get(key) if c.intervals else None
    if ci is None:
        return "–"
    how = (getattr(c, "intervals_open", None) or {}).get(key, "")
    lo = ("≤" if how in ("lower", "both") else "") + fmt(ci[0])
    hi = ("≥" if how in ("upper", "both") else "") + fmt(ci[1])
    return f"{lo}–{hi}"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.2g}%" if v < 0.1 else f"{v * 100:.1f}%"


def compared(col: str, v: float | None) -> str:
    """A compared column's value: latencies (``*_s``) in ms, the error rate in %, else 4 digits."""
    if col.endswith("_s") and not col.endswith("_per_s"):
        return ms(v)
    return pct(v) if col == "error_rate" else num(v, 4)


def change(ch: float | None) -> str:
    """A relative change as a signed percentage, '–' when there is none."""
    return "–" if ch is None else f"{ch:+.1%}"


def yes_no(v: bool | None) -> str:
    return "–" if v is None else ("yes" if v else "NO")


def energy_source_short(src: str | None) -> str:
    """'window:nvml-counter' -> 'counter', 'sample-counter' -> 'sample ctr', ..."""
    if not src:
        return "–"
    if src.startswith("window:"):
        return "integral" if "integral" in src else "counter"
    return {"sample-counter": "sample ctr", "power-integral": "integral"}.get(src, src)

