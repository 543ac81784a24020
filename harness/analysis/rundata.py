"""A run directory read back into memory: the only input analysis and the report ever use."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from harness.errors import InputError
from harness.records.rundir import read_arrow, read_table
from harness.scenario.models import Scenario


@dataclass
class RunData:
    path: Path
    manifest: dict
    scenario: Scenario | None
    requests: pd.DataFrame
    gpu: pd.DataFrame
    windows: pd.DataFrame
    histograms: dict[str, dict] = field(default_factory=dict)  # cell -> {"ttft": encoded, ...}
    notes: list[str] = field(default_factory=list)
    server: pd.DataFrame | None = None   # server_metrics.parquet: the replicas' /metrics samples

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)


def _read_scenario(path: Path, manifest: dict) -> Scenario | None:
    """The scenario as the run saw it; stored files are not re-checked (datasets may be gone)."""
    p = path / "scenario.yaml"
    data = None
    if p.is_file():
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise InputError(f"invalid YAML in the run's scenario: {e}", file=str(p)) from None
    elif isinstance(manifest.get("scenario"), dict):
        data = manifest["scenario"]
    if not isinstance(data, dict):
        return None
    try:
        return Scenario.model_validate(data)
    except Exception as e:  # noqa: BLE001 - a run from another version still has records
        raise InputError(
            f"the run's scenario does not validate: {str(e).splitlines()[0]}", file=str(p)
        ) from None


def load_run(path: str | Path) -> RunData:
    """Read every file of a run directory; InputError naming the file when it is not one."""
    p = Path(path)
    if not p.is_dir():
        raise InputError("run directory not found", file=str(p))
    mf = p / "manifest.json"
    if not mf.is_file() and not (p / "requests.parquet").is_file():
        raise InputError("not a run directory (no manifest.json or requests.parquet)", file=str(p))
    manifest: dict = {}
    if mf.is_file():
        try:
            manifest = json.loads(mf.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON: {e.msg}", file=str(mf), line=e.lineno) from None
    scenario = _read_scenario(p, manifest)
    tables = {}
    for name in ("requests", "gpu_samples", "windows"):
        try:
            tables[name] = read_table(p, name)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise InputError(
                f"cannot read Parquet: {e.__class__.__name__}: {e}", file=str(p / f"{name}.parquet")
            ) from None
    hist: dict[str, dict] = {}
    hdir = p / "histograms"
    if hdir.is_dir():
        for hf in sorted(hdir.glob("*.json")):
            try:
                hist[hf.stem] = json.loads(hf.read_text())
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON: {e.msg}", file=str(hf), line=e.lineno) from None
    server = None
    if (p / "server_metrics.parquet").exists() or list(p.glob("server_metrics.j*.arrows")):
        try:
            from harness.telemetry.server_metrics import server_sample_schema

            server = read_arrow(p, "server_metrics", server_sample_schema()).to_pandas()
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise InputError(f"cannot read Parquet: {e.__class__.__name__}: {e}",
                             file=str(p / "server_metrics.parquet")) from None
    return RunData(
        server=server,
        path=p,
        manifest=manifest,
        scenario=scenario,
        requests=tables["requests"],
        gpu=tables["gpu_samples"],
        windows=tables["windows"],
        histograms=hist,
    )
