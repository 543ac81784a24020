"""Reading back for analysis: InfluxQL ``/query`` into pandas frames (InfluxDB 1.x, 2.x with a
DBRP mapping, 3.x), and VictoriaMetrics' ``/api/v1/export`` (which has no InfluxQL).
"""

from __future__ import annotations

import json

import urllib3

from harness.secrets import redact
from harness.store.target import InfluxTarget


class QueryError(Exception):
    pass


class InfluxQLReader:
    def __init__(self, target: InfluxTarget):
        self.target = target
        self._pool = urllib3.PoolManager(retries=False, timeout=max(30.0, target.timeout_s))

    def raw(self, q: str) -> dict:
        fields = {"q": q, "epoch": "ns"}
        if self.target.database:
            fields["db"] = self.target.database
        try:
            r = self._pool.request("POST", f"{self.target.url}/query", fields=fields,
                                   encode_multipart=False, headers=self.target.auth_headers())
        except urllib3.exceptions.HTTPError as e:
            raise QueryError(redact(f"{type(e).__name__}: {e}", *self.target.secrets())) from None
        if r.status != 200:
            raise QueryError(redact(f"HTTP {r.status}: {r.data[:300]!r}", *self.target.secrets()))
        out = json.loads(r.data)
        for res in out.get("results", []):
            if "error" in res:
                raise QueryError(f"InfluxQL error: {res['error']} (query: {q})")
        return out

    def query(self, q: str):
        """The first statement's result as one DataFrame: ``time`` (UTC), the series' tags (for
        GROUP BY), the columns; an empty frame when nothing matched."""
        return self.frames(q)[0]

    def frames(self, q: str) -> list:
        import pandas as pd

        out = []
        for res in self.raw(q).get("results", []):
            parts = []
            for s in res.get("series", []) or []:
                df = pd.DataFrame(s.get("values", []), columns=s["columns"])
                for k, v in (s.get("tags") or {}).items():
                    df[k] = v
                if "name" in s and "measurement" not in df.columns:
                    df.insert(0, "measurement", s["name"])
                parts.append(df)
            df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            if "time" in df.columns:
                df["time"] = pd.to_datetime(df["time"].astype("int64"), unit="ns", utc=True)
            out.append(df)
        return out or [pd.DataFrame()]

    def count(self, measurement: str, field: str, where: str = "") -> int:
        """Points of one measurement that hold ``field`` (0 when none)."""
        w = f" WHERE {where}" if where else ""
        df = self.query(f'SELECT count("{field}") FROM "{measurement}"{w}')
        return 0 if df.empty else int(df.iloc[0]["count"])

    def close(self) -> None:
        self._pool.clear()


class VictoriaMetricsReader:
    """Raw samples from VictoriaMetrics, where a point's field ``f`` of measurement ``m`` is the
    series ``m_f`` with the tags as labels, and timestamps are milliseconds."""

    def __init__(self, url: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self._pool = urllib3.PoolManager(retries=False, timeout=timeout_s)

    def force_flush(self) -> None:
        """Make just-ingested samples searchable (VictoriaMetrics buffers them ~1 s)."""
        self._pool.request("GET", f"{self.url}/internal/force_flush")

    def export(self, match: str, start_s: float = 0, end_s: float | None = None):
        """Samples of every series matching ``match`` (a series selector) as a DataFrame with
        ``__name__``, the labels, ``ts_ms`` and ``value``. ``end_s`` defaults to a day ahead
        (VictoriaMetrics' own default, now, would hide points stamped in the future)."""
        import time

        import pandas as pd

        end = end_s if end_s is not None else time.time() + 86400
        fields = {"match[]": match, "start": f"{start_s:.3f}", "end": f"{end:.3f}"}
        r = self._pool.request("POST", f"{self.url}/api/v1/export", fields=fields,
                               encode_multipart=False)
        if r.status != 200:
            raise QueryError(f"HTTP {r.status}: {r.data[:300]!r}")
        rows = []
        for ln in r.data.splitlines():
            if not ln.strip():
                continue
            s = json.loads(ln)
            labels = s["metric"]
            for ts, v in zip(s["timestamps"], s["values"]):
                rows.append({**labels, "ts_ms": ts, "value": v})
        return pd.DataFrame(rows)

    def close(self) -> None:
        self._pool.clear()
