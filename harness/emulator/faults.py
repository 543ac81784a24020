"""Per-request fault injection, for testing clients (the load generator) against bad servers.

Off unless a request asks: header ``X-Emulator-Fault: SPEC`` or top-level JSON field
``"emulator_fault": "SPEC"``; or for every request to one replica: ``POST /emulator/fault`` with
``{"fault": "SPEC"}`` (``{"fault": null}`` heals it). SPEC is one of (N = tokens written normally first, default 0):

  status:CODE        answer CODE at once with TGI's error body (422 validation, 429 overloaded,
                     424 generation, 500 incomplete_generation, 503 unhealthy; others: "emulated")
  reset:N            after N tokens, reset the TCP connection (RST)
  close:N            after N tokens, close the connection cleanly (FIN) mid-body
  sse_error:N        after N tokens, send TGI's in-stream error event, then end the stream
  malformed:N        after N tokens, send one event that is not JSON, then end the stream
  truncate:N         after N tokens, end the stream properly but without the final event
  stall:N            after N tokens, send nothing more and keep the connection open
  delay:N:MS         after N tokens, hold the stream for MS milliseconds, then go on
  hang               never answer (not even headers)
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("status", "reset", "close", "sse_error", "malformed", "truncate", "stall", "delay", "hang")


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    after: int = 0          # tokens written before the fault (status: the HTTP code)
    ms: float = 0.0

    @property
    def code(self) -> int:
        return self.after


def parse_fault(spec: str | None) -> Fault | None:
    if not spec:
        return None
    parts = spec.strip().split(":")
    kind = parts[0].strip().lower()
    if kind not in KINDS:
        raise FaultSpecError(f"unknown fault {kind!r} (one of {', '.join(KINDS)})")
    try:
        nums = [int(p) for p in parts[1:2]]
        ms = float(parts[2]) if len(parts) > 2 else 0.0
    except ValueError:
        raise FaultSpecError(f"bad fault spec {spec!r}") from None
    after = nums[0] if nums else 0
    if kind == "status" and not (100 <= after <= 599):
        raise FaultSpecError("status needs a code, e.g. status:429")
    if kind == "delay" and ms <= 0:
        raise FaultSpecError("delay needs milliseconds, e.g. delay:5:2000")
    if after < 0:
        raise FaultSpecError("token count must be >= 0")
    return Fault(kind, after, ms)


STATUS_ERROR = {
    400: ("Bad request", "bad_request"),
    422: ("Input validation error: emulated fault", "validation"),
    424: ("Request failed during generation: emulated fault", "generation"),
    429: ("Model is overloaded", "overloaded"),
    500: ("Incomplete generation", "incomplete_generation"),
    503: ("unhealthy", "healthcheck"),
}


def status_error(code: int) -> tuple[str, str]:
    return STATUS_ERROR.get(code, (f"Emulated error {code}", "emulated"))
