"""Pick the GPU source a run uses, and say in one line when there is none.

``auto``: NVML when it works, else the emulator's modeled power when emulator replicas are
given, else no GPU data. Whatever is missing (library, driver, GPU, permission) becomes ONE
warning line; the run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from harness.telemetry.source import GpuSource, SourceUnavailable

log = logging.getLogger("harness.telemetry")


@dataclass
class Selected:
    source: GpuSource | None
    note: str          # one line for the console and the manifest

    @property
    def kind(self) -> str:
        if self.source is None:
            return "none"
        return self.source.describe().get("kind", "?")


def open_source(kind: str = "auto", *, gpus: list[int] | None = None,
                emulator_urls: list[str] | None = None, binding: Any = None,
                warn: bool = True) -> Selected:
    """``kind``: ``auto`` | ``nvml`` | ``emulated`` | ``none``. Never raises for a missing GPU."""
    if kind == "none":
        return Selected(None, "telemetry: off (telemetry.source is none)")
    nvml_why = None
    if kind in ("auto", "nvml"):
        from harness.telemetry.nvml import NvmlSource
        try:
            src = NvmlSource(gpus=gpus, binding=binding)
            d = src.describe()
            names = sorted({v.get("name", "?") for v in d["gpus"].values()})
            return Selected(src, f"telemetry: NVML, {len(src.gpus)} GPU(s) ({', '.join(names)}), "
                                 f"power from {src.power_source(src.gpus[0])}")
        except SourceUnavailable as e:
            nvml_why = str(e)
    emu_why = None
    if kind == "emulated" or (kind == "auto" and emulator_urls):
        from harness.telemetry.emulated import EmulatedSource
        try:
            src = EmulatedSource(emulator_urls or [])
            pre = f"no NVML ({nvml_why}); " if nvml_why else ""
            return Selected(src, f"telemetry: {pre}using the emulator's modeled power "
                                 f"(labelled source=emulated)")
        except SourceUnavailable as e:
            emu_why = str(e)
    why = "; ".join(x for x in (nvml_why and f"no NVML: {nvml_why}", emu_why) if x)
    sel = Selected(None, f"telemetry: {why or 'no GPU source'}; the run goes on without GPU data")
    if warn:
        log.warning(sel.note)
    return sel
