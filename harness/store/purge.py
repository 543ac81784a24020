"""Remove an aborted attempt of a cell from the store, so that a resumed cell holds only its
final attempt there as in the run directory.

Two places can hold the aborted attempt's points: the database (deleted by tags ``run_id`` and
``cell``: InfluxQL ``DELETE`` for ``api: v1``, ``/api/v2/delete`` for ``api: v2``) and the run's
spool of batches not yet written (the lines are filtered out before the spool is replayed, or
replay would bring them back). Request and window points carry an ``attempt`` field as well, so
where the database refuses deletes (VictoriaMetrics, a read-only token) a query can still keep
the latest attempt; the outcome is reported, never raised.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Iterable
from urllib.parse import urlencode

import urllib3

from harness.secrets import redact
from harness.store.lineproto import _TAG
from harness.store.target import InfluxTarget

MEASUREMENTS = ("request", "window")


def _q(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def _head(line: bytes) -> bytes:
    """Measurement and tags: up to the first space not escaped by a backslash."""
    i = 0
    while True:
        i = line.find(b" ", i)
        if i < 0:
            return line
        if line[i - 1:i] != b"\\":
            return line[:i]
        i += 1


def _matches(line: bytes, run_tag: bytes, cell_tags: list[bytes]) -> bool:
    head = _head(line) + b","
    meas = head.split(b",", 1)[0]
    if meas.decode("utf-8", "replace") not in MEASUREMENTS or run_tag not in head:
        return False
    return any(c in head for c in cell_tags)


def purge_spool(spool_dir: str | os.PathLike, run_id: str, cells: Iterable[str]) -> int:
    """Drop the cells' request and window lines from every spooled batch; the points removed."""
    d = Path(spool_dir)
    if not d.is_dir():
        return 0
    run_tag = f",run_id={run_id.translate(_TAG)},".encode()
    cell_tags = [f",cell={c.translate(_TAG)},".encode() for c in cells]
    removed = 0
    for f in sorted(d.glob("*.lp")):
        seq, _, rest = f.name.partition("-")
        if not seq.isdigit():
            continue
        lines = f.read_bytes().splitlines()
        keep = [ln for ln in lines if ln and not _matches(ln, run_tag, cell_tags)]
        gone = sum(1 for ln in lines if ln) - len(keep)
        if not gone:
            continue
        removed += gone
        if not keep:
            f.unlink()
            continue
        new = d / f"{seq}-{len(keep)}.lp"
        tmp = d / (new.name + ".tmp")
        with open(tmp, "wb") as out:
            out.write(b"\n".join(keep) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, new)
        if new != f:
            f.unlink()
    return removed


def delete_cells(target: InfluxTarget, run_id: str, cells: Iterable[str]) -> None:
    """Delete the cells' request and window points of ``run_id`` from the database; raises
    ``RuntimeError`` (message free of secrets) when the server refuses or cannot be reached."""
    pool = urllib3.PoolManager(retries=False, timeout=max(10.0, target.timeout_s))
    try:
        for cell in cells:
            for meas in MEASUREMENTS:
                if target.api == "v1":
                    q = (f'DELETE FROM "{meas}" WHERE "run_id" = \'{_q(run_id)}\' '
                         f"AND \"cell\" = '{_q(cell)}'")
                    fields = {"q": q, "db": target.database}
                    r = pool.request("POST", f"{target.url}/query", fields=fields,
                                     encode_multipart=False, headers=target.auth_headers())
                    body = r.data.decode("utf-8", "replace")
                    if r.status == 200 and '"error"' not in body:
                        continue
                else:
                    stop = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=1)
                    pred = (f'_measurement="{meas}" AND run_id="{_q(run_id)}" '
                            f'AND cell="{_q(cell)}"')
                    body_out = json.dumps({"start": "1970-01-01T00:00:00Z",
                                           "stop": stop.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                           "predicate": pred}).encode()
                    qs = {"bucket": target.write_bucket, **({"org": target.org} if target.org else {})}
                    r = pool.request("POST", f"{target.url}/api/v2/delete?{urlencode(qs)}",
                                     body=body_out, headers={"Content-Type": "application/json",
                                                             **target.auth_headers()})
                    body = r.data.decode("utf-8", "replace")
                    if 200 <= r.status < 300:
                        continue
                raise RuntimeError(redact(f"deleting {meas} points of {cell}: HTTP {r.status}: "
                                          f"{body[:200]}", *target.secrets()))
    except urllib3.exceptions.HTTPError as e:
        raise RuntimeError(redact(f"{type(e).__name__}: {e}", *target.secrets())) from None
    finally:
        pool.clear()
