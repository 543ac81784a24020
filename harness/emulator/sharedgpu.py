"""One simulated GPU shared by emulator replicas in separate processes or containers.

The GPU's state lives in a small memory-mapped file (on a volume every replica container
mounts, or any path every process can open): a header with the GPU's total memory, its energy
counter and temperature, and one slot per replica holding the memory it allocated, the GPU busy
fraction of its current step and a heartbeat. ``flock`` on the file serialises the updates that
must be atomic (memory allocation at warm-up, the energy integral); a step's busy fraction is a
plain aligned store into the replica's own slot. A slot whose heartbeat is older than
:data:`STALE_S` belongs to a replica that died (``docker kill``): its memory and load are freed,
as the driver frees a dead process's memory.

:class:`ProcessSharedGpu` offers the interface the engines use from
:class:`harness.emulator.gpu.SharedGpu` (``set_rate``, ``others``, ``util``, ``power_w``,
``snapshot``), so every replica's step sees the other containers' GPU use, and every replica
reports the same power and energy: one power series for the GPU.

:meth:`ProcessSharedGpu.warm_up` sizes a replica's KV cache the way TGI does (see
harness/launch/memory.py and docs/stack.md): load the weights, measure the GPU's free memory,
take ``free - (1 - CUDA_MEMORY_FRACTION * 0.9) * total`` plus the warm-up blocks, and hold it.
Everything here is a model and is labelled ``emulated`` wherever it leaves the process.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from harness.emulator.gpu import other_load, power_w, temperature_c
from harness.emulator.profile import Profile
from harness.launch.memory import tgi_kv_bytes, tgi_warmup_tokens

MAGIC = b"SLMGPU02"
NSLOTS = 64
HEADER = struct.Struct("<8sIIqqddI")      # magic, version, nslots, total, last_ns, energy, temp, high
HEADER_SIZE = 128
SLOT = struct.Struct("<IIqdqqqd")         # state, label, heartbeat_ns, rate, mem_bytes, kv_tokens, pid, attention
SLOT_SIZE = 64
SIZE = HEADER_SIZE + NSLOTS * SLOT_SIZE
STALE_S = 3.0                             # a slot without heartbeat this long belongs to a dead replica
HEARTBEAT_S = 0.5
_RATE_OFF = 16                            # offset of `rate` inside a slot
_ATTN_OFF = 48                            # offset of `attention` (10^6 pairs a second) inside a slot
_HB_OFF = 8


class SharedGpuError(RuntimeError):
    """The state file cannot be used (another GPU's file, unreadable, no free slot)."""


class GpuStateFile:
    """The mapped file and its lock; the layout is the module's constants."""

    def __init__(self, path: str | Path, total_bytes: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        with self.locked():
            size = os.fstat(self.fd).st_size
            if size == 0:
                os.ftruncate(self.fd, SIZE)
            elif size != SIZE:
                raise SharedGpuError(f"{self.path}: not a simulated GPU state file ({size} bytes)")
            self.mm = mmap.mmap(self.fd, SIZE)
            magic, _v, nslots, total, *_ = HEADER.unpack_from(self.mm, 0)
            if magic != MAGIC:
                HEADER.pack_into(self.mm, 0, MAGIC, 1, NSLOTS, total_bytes, time.monotonic_ns(),
                                 0.0, 0.0, 0)
            elif total != total_bytes:
                raise SharedGpuError(f"{self.path} models a GPU of {total} bytes, this profile's "
                                     f"GPU has {total_bytes}: one state file per simulated GPU")

    @contextmanager
    def locked(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    # header
    def header(self) -> tuple:
        return HEADER.unpack_from(self.mm, 0)

    def set_clock(self, last_ns: int, energy_j: float, temp_c: float) -> None:
        struct.pack_into("<qdd", self.mm, 24, last_ns, energy_j, temp_c)

    def high(self) -> int:
        return struct.unpack_from("<I", self.mm, 48)[0]

    # slots
    def slot(self, k: int) -> tuple:
        return SLOT.unpack_from(self.mm, HEADER_SIZE + k * SLOT_SIZE)

    def write_slot(self, k: int, *values) -> None:
        SLOT.pack_into(self.mm, HEADER_SIZE + k * SLOT_SIZE, *values)

    def set_rate(self, k: int, rate: float, attention: float = 0.0) -> None:
        struct.pack_into("<d", self.mm, HEADER_SIZE + k * SLOT_SIZE + _RATE_OFF, rate)
        struct.pack_into("<d", self.mm, HEADER_SIZE + k * SLOT_SIZE + _ATTN_OFF, attention)

    def beat(self, k: int, now_ns: int) -> None:
        struct.pack_into("<q", self.mm, HEADER_SIZE + k * SLOT_SIZE + _HB_OFF, now_ns)

    def alive(self, now_ns: int) -> list[tuple[int, tuple]]:
        """(slot, fields) of every slot in use whose heartbeat is fresh."""
        out = []
        stale = now_ns - int(STALE_S * 1e9)
        for k in range(self.high()):
            s = self.slot(k)
            if s[0] == 1 and s[2] >= stale:
                out.append((k, s))
        return out

    def claim(self, label: int, now_ns: int) -> int:
        """A free slot (dead replicas' slots are freed first); call with the lock held."""
        stale = now_ns - int(STALE_S * 1e9)
        high = self.high()
        for k in range(high):
            s = self.slot(k)
            if s[0] == 1 and s[2] < stale:
                self.write_slot(k, 0, 0, 0, 0.0, 0, 0, 0, 0.0)
        for k in range(NSLOTS):
            if self.slot(k)[0] == 0:
                self.write_slot(k, 1, label, now_ns, 0.0, 0, 0, os.getpid(), 0.0)
                if k >= high:
                    struct.pack_into("<I", self.mm, 48, k + 1)
                return k
        raise SharedGpuError(f"{self.path}: all {NSLOTS} replica slots are in use")

    def close(self) -> None:
        try:
            self.mm.close()
        finally:
            os.close(self.fd)


class ProcessSharedGpu:
    """This process's replicas on the simulated GPU of ``path`` (see the module docstring)."""

    def __init__(self, profile: Profile, replicas: int, path: str | Path, *, label: int = 0):
        self.spec = profile.gpu
        self.model = profile.model
        self.limits = profile.limits
        self.replicas = replicas
        self.kv_tokens = [0] * replicas          # written by the engines (tokens in use)
        self.file = GpuStateFile(path, self.spec.memory_bytes)
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        now = time.monotonic_ns()
        with self.file.locked():
            self.slots = [self.file.claim(label + i, now) for i in range(replicas)]
        self.budgets: list[int | None] = [None] * replicas
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="slm-gpu-heartbeat", daemon=True)
        self._beat.start()

    # -- lifetime ---------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            now = time.monotonic_ns()
            for k in self.slots:
                self.file.beat(k, now)

    def close(self) -> None:
        """Free this process's memory and slots on the simulated GPU."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._beat.join(timeout=2)
        now = time.monotonic_ns()
        with self.file.locked():
            self._advance(now)
            for k in self.slots:
                self.file.write_slot(k, 0, 0, 0, 0.0, 0, 0, 0, 0.0)
        self.file.close()

    # -- memory: TGI's warm-up ---------------------------------------------------------------
    def _alloc(self, replica: int, add_bytes: int, kv_tokens: int | None = None) -> None:
        k = self.slots[replica]
        st, label, hb, rate, mem, kv, pid, attn = self.file.slot(k)
        self.file.write_slot(k, st, label, time.monotonic_ns(), rate, mem + add_bytes,
                             kv if kv_tokens is None else kv_tokens, pid, attn)

    def free_bytes(self) -> int:
        used = sum(s[4] for _, s in self.file.alive(time.monotonic_ns()))
        return self.spec.memory_bytes - used

    def warm_up(self, replica: int, cuda_memory_fraction: float, load_s: float = 0.0) -> int:
        """Load the weights, then size and hold the KV cache as TGI does; the budget in tokens.

        ``load_s``: modeled weight loading time between the two steps, during which replicas
        started at the same time load theirs too (the race TGI's sizing has)."""
        resident = self.model.weight_bytes + self.spec.replica_overhead_bytes
        with self.file.locked():
            self._alloc(replica, resident)
        if load_s > 0:
            time.sleep(load_s)
        lim = self.limits
        per_token = self.model.kv_bytes_per_token
        warm_tokens = tgi_warmup_tokens(lim.max_batch_prefill_tokens, lim.max_input_tokens,
                                        lim.max_total_tokens)
        transient = lim.max_batch_prefill_tokens * per_token   # warm-up prefill activations
        with self.file.locked():
            free = self.free_bytes() - warm_tokens * per_token - transient
            kv = tgi_kv_bytes(free, self.spec.memory_bytes, cuda_memory_fraction)
            tokens = kv // per_token + warm_tokens
            self._alloc(replica, tokens * per_token, tokens)
        self.budgets[replica] = tokens
        return tokens

    # -- the engines' interface (harness.emulator.gpu.SharedGpu) ----------------------------
    def set_rate(self, replica: int, rate: float, now_ns: int, attention: float = 0.0) -> None:
        with self.file.locked():
            self._advance(now_ns)
            self.file.set_rate(self.slots[replica], rate, attention)

    def others(self, replica: int) -> tuple[float, int]:
        """Utilisation of the other replicas on this GPU (every process) and how many are busy."""
        alive = self.file.alive(time.monotonic_ns())
        return other_load(((k, s[3]) for k, s in alive), self.slots[replica])

    @staticmethod
    def _load(alive: list[tuple[int, tuple]]) -> tuple[float, float]:
        """The GPU's utilisation and attention rate: every live replica's slot summed."""
        return min(1.0, sum(s[3] for _, s in alive)), sum(s[7] for _, s in alive)

    @property
    def util(self) -> float:
        return self._load(self.file.alive(time.monotonic_ns()))[0]

    def power_w(self) -> float:
        return power_w(self.spec, *self._load(self.file.alive(time.monotonic_ns())))

    def _advance(self, now_ns: int) -> None:
        """Integrate power over the time since the last update (the lock is held)."""
        _m, _v, _n, _t, last_ns, energy, temp, _h = self.file.header()
        dt = (now_ns - last_ns) / 1e9
        if dt <= 0:
            return
        p = self.power_w()
        energy += p * dt
        if temp == 0.0:
            temp = self.spec.temp_idle_c
        self.file.set_clock(now_ns, energy, temperature_c(self.spec, temp, p, dt))

    def mem_used_bytes(self) -> int:
        return self.spec.memory_bytes - self.free_bytes()

    def snapshot(self, replica: int, now_ns: int | None = None) -> dict:
        now = time.monotonic_ns() if now_ns is None else now_ns
        with self.file.locked():
            self._advance(now)
            _m, _v, _n, _t, _last, energy, temp, _h = self.file.header()
            alive = self.file.alive(now)
        util, attention = self._load(alive)
        return {
            "emulated": True,
            "ts_ns": now + self._wall_offset_ns,
            "power_w": round(power_w(self.spec, util, attention), 3),
            "energy_j": round(energy, 6),
            "gpu_util_pct": round(100.0 * util, 3),
            "mem_used_bytes": sum(s[4] for _, s in alive),
            "mem_total_bytes": self.spec.memory_bytes,
            "sm_clock_mhz": self.spec.sm_clock_mhz,
            "temperature_c": round(temp, 2),
            "replica": replica,
            "replicas": len(alive),
            "name": self.spec.name,
            "shared": str(self.file.path),
            "kv_budget_tokens": self.budgets[replica],
        }


def start_shared_gpu(profile: Profile, replicas: int, path: str | None,
                     cuda_memory_fraction: float | None, load_s: float = 0.0) -> ProcessSharedGpu:
    """This process's replicas on the shared GPU at ``path`` (a private one when None), each
    warmed up in turn with ``cuda_memory_fraction`` (TGI's default 1.0 when None)."""
    import atexit
    import tempfile

    private = None
    if not path:
        private = tempfile.mkdtemp(prefix="slm-gpu-")
        path = os.path.join(private, "gpu.state")
    gpu = ProcessSharedGpu(profile, replicas, path)
    fraction = 1.0 if cuda_memory_fraction is None else cuda_memory_fraction
    try:
        for i in range(replicas):
            tokens = gpu.warm_up(i, fraction, load_s if i == 0 else 0.0)
            print(f"replica {i}: Setting max batch total tokens to {tokens} (cuda memory fraction {fraction:g}, "
                  f"simulated GPU {path}, {gpu.free_bytes() / 2**30:.2f} GiB free)", flush=True)
    except BaseException:
        gpu.close()
        raise
    atexit.register(gpu.close)
    if private:
        atexit.register(lambda: (Path(path).unlink(missing_ok=True), os.rmdir(private)))
    return gpu
