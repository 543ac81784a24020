"""A disk spool of line-protocol batches that could not be written; replayed oldest first.

Each batch is one file ``<seq>-<points>.lp``, written to a temporary name, fsynced, then renamed,
so a crash leaves either the whole batch or nothing. A file is deleted only after the database
acknowledged it (HTTP 2xx). A batch acknowledged but whose deletion was lost (crash between the
two) is sent again: that rewrites identical points, which InfluxDB stores once (same series and
time), so the database still holds every point exactly once.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class Spool:
    def __init__(self, path: str | os.PathLike, max_bytes: int = 1 << 30):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        files = self._files()
        self._seq = max((int(f.name.split("-")[0]) for f in files), default=0)
        self._bytes = sum(f.stat().st_size for f in files)
        self.dropped_points = 0

    def _files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("*.lp") if p.name.split("-")[0].isdigit())

    def put(self, body: bytes, points: int) -> bool:
        """Persist one batch; False (and counted as dropped) when the spool is full."""
        with self._lock:
            if self._bytes + len(body) > self.max_bytes:
                self.dropped_points += points
                return False
            self._seq += 1
            name = f"{self._seq:012d}-{points}.lp"
            tmp = self.path / (name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path / name)
            self._bytes += len(body)
            return True

    def oldest(self) -> tuple[Path, bytes, int] | None:
        with self._lock:
            files = self._files()
        if not files:
            return None
        f = files[0]
        return f, f.read_bytes(), int(f.stem.split("-")[1])

    def oldest_batch(self, max_points: int) -> list[tuple[Path, bytes, int]]:
        """The oldest files, together up to ``max_points`` (at least one)."""
        with self._lock:
            files = self._files()
        out, n = [], 0
        for f in files:
            k = int(f.stem.split("-")[1])
            if out and n + k > max_points:
                break
            try:
                out.append((f, f.read_bytes(), k))
            except FileNotFoundError:   # replayed and removed meanwhile
                continue
            n += k
        return out

    def done(self, f: Path) -> None:
        with self._lock:
            size = f.stat().st_size
            f.unlink()
            self._bytes -= size

    def pending(self) -> tuple[int, int]:
        """(batches, points) waiting."""
        files = self._files()
        return len(files), sum(int(f.stem.split("-")[1]) for f in files)

    def empty(self) -> bool:
        return not self._files()
