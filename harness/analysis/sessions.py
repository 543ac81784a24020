"""Multi-turn figures: latency by turn index (the context grows each turn) and per-session totals.

Per turn (cell, turn): the measured window's requests of that turn; their input length shows
the history growing, their TTFT what that costs. Per session (cell): the conversations whose
first turn was sent in the measured window, with all their turns (a later turn may fall in the
cool-down): how many turns they got through, how long they lasted from the first turn's intended
send to the last answer's end, the tokens they moved, and their session latency (the sum of
their turns' end-to-end times: what the user waited for answers, think times left out).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

TURN_COLUMNS = ("cell", "turn", "requests", "requests_ok", "input_tokens_mean", "ttft_p50_s",
                "ttft_p99_s", "e2e_p50_s", "e2e_p99_s")
SESSION_COLUMNS = ("cell", "sessions", "complete", "turns_mean", "duration_p50_s", "duration_p99_s",
                   "input_tokens_mean", "output_tokens_mean", "latency_p50_s", "latency_p99_s")


@dataclass
class TurnFigures:
    cell: str
    turn: int
    requests: int
    requests_ok: int
    input_tokens_mean: float | None
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    e2e_p50_s: float | None
    e2e_p99_s: float | None


@dataclass
class SessionFigures:
    cell: str
    sessions: int          # conversations started in the measured window
    complete: int          # ... that got every turn answered (the scenario's turns, when known)
    turns_mean: float
    duration_p50_s: float | None
    duration_p99_s: float | None
    input_tokens_mean: float | None    # summed over a session's turns (each carries its history)
    output_tokens_mean: float | None
    latency_p50_s: float | None        # the sum of a session's turns' e2e
    latency_p99_s: float | None


@dataclass
class SessionReport:
    turns: list[TurnFigures]
    sessions: list[SessionFigures]

    def to_dict(self) -> dict:
        return {"turns": [asdict(t) for t in self.turns], "sessions": [asdict(s) for s in self.sessions]}


def _q(s: pd.Series, q: float) -> float | None:
    s = s.dropna()
    return None if s.empty else float(s.quantile(q))


def _mean(s: pd.Series) -> float | None:
    s = s.dropna()
    return None if s.empty else float(s.mean())


def session_figures(requests: pd.DataFrame, turns: int | None = None) -> SessionReport | None:
    """The figures of a run's request records, or None when no request belongs to a session.
    ``turns``: the scenario's turns per session (a session is complete with that many answered)."""
    if requests.empty or "session" not in requests or requests["session"].isna().all():
        return None
    df = requests[requests["session"].notna() & requests["turn"].notna()].copy()
    df["turn"] = df["turn"].astype(int)
    df["ok"] = df["error_class"].isna()
    key = ["cell", "worker", "session"]      # a session id is unique within its generator process
    out_turns: list[TurnFigures] = []
    measured = df[df["phase"] == "measure"]
    for (cell, turn), g in measured.groupby(["cell", "turn"], sort=True):
        ok = g[g["ok"]]
        out_turns.append(TurnFigures(str(cell), int(turn), len(g), len(ok), _mean(g["input_tokens"]),
                                     _q(ok["ttft_s"], 0.5), _q(ok["ttft_s"], 0.99),
                                     _q(ok["e2e_s"], 0.5), _q(ok["e2e_s"], 0.99)))
    started = df[(df["turn"] == 1) & (df["phase"] == "measure")][key].drop_duplicates()
    mine = df.merge(started, on=key)
    out_sessions: list[SessionFigures] = []
    for cell, g in mine.groupby("cell", sort=True):
        per = g.groupby(["worker", "session"]).agg(
            n=("turn", "size"), answered=("ok", "sum"), first=("intended_ns", "min"), last=("end_ns", "max"),
            inp=("input_tokens", "sum"), outp=("output_tokens", "sum"), lat=("e2e_s", "sum"))
        want = turns if turns else int(per["n"].max())
        dur = (per["last"] - per["first"]) / 1e9
        out_sessions.append(SessionFigures(
            str(cell), len(per), int((per["answered"] >= want).sum()), float(per["n"].mean()),
            _q(dur, 0.5), _q(dur, 0.99), _mean(per["inp"]), _mean(per["outp"]),
            _q(per["lat"], 0.5), _q(per["lat"], 0.99)))
    return SessionReport(out_turns, out_sessions)


def write_csvs(rep: SessionReport, out_dir) -> None:
    """turns.csv and sessions.csv in ``out_dir`` (the run directory)."""
    from pathlib import Path

    d = Path(out_dir)
    pd.DataFrame([asdict(t) for t in rep.turns], columns=list(TURN_COLUMNS)).to_csv(d / "turns.csv", index=False)
    pd.DataFrame([asdict(s) for s in rep.sessions], columns=list(SESSION_COLUMNS)).to_csv(
        d / "sessions.csv", index=False)
