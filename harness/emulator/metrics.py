"""Prometheus ``/metrics`` with TGI's own metric names (router ``server.rs``, backend ``v3``).

One registry per replica, fed by the engine's hooks; rendered in the text format that TGI's
``metrics-exporter-prometheus`` writes (``_bucket{le=..}``, ``_sum``, ``_count``), with TGI's
bucket choices (35 geometric duration buckets from 0.15 ms, x1.5).
"""

from __future__ import annotations

from bisect import bisect_left

DURATION_BUCKETS = []
_v = 0.0001
for _ in range(35):
    _v *= 1.5
    DURATION_BUCKETS.append(_v)


def _linear(maximum: int) -> list[float]:
    return [maximum / 100.0 * (i + 1) for i in range(100)]


class _Hist:
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: list[float]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.buckets, v)] += 1
        self.sum += v
        self.count += 1


HELP = {
    "tgi_request_count": "Total number of requests",
    "tgi_request_success": "Number of successful requests",
    "tgi_request_failure": "Number of failed requests",
    "tgi_queue_size": "Current queue size",
    "tgi_batch_current_size": "Current batch size",
    "tgi_batch_current_max_tokens": "Maximum tokens for the current batch",
    "tgi_batch_max_total_tokens": "Maximum amount of tokens in total.",
    "tgi_request_duration": "Total time spent processing the request",
    "tgi_request_validation_duration": "Time spent validating the request",
    "tgi_request_queue_duration": "Time spent in the queue per request",
    "tgi_request_inference_duration": "Request inference duration",
    "tgi_request_mean_time_per_token_duration": "Mean time per token per request",
    "tgi_request_generated_tokens": "Generated tokens per request",
    "tgi_request_input_length": "Input token length per request",
    "tgi_request_max_new_tokens": "Maximum new tokens per request",
    "tgi_batch_next_size": "Batch size of the next batch",
    "tgi_batch_inference_count": "Inference calls per method (prefill or decode)",
    "tgi_batch_inference_success": "Number of successful inference calls per method (prefill or decode)",
    "tgi_batch_inference_duration": "Batch inference duration",
    "tgi_batch_forward_duration": "Batch forward duration per method (prefill or decode)",
}


class TgiMetrics:
    """Counters, gauges and histograms of one replica; also the engine's stats hooks."""

    def __init__(self, max_input_tokens: int, max_total_tokens: int, max_batch_total_tokens: int):
        self.counters: dict[tuple[str, tuple], float] = {}
        self.gauges: dict[str, float] = {
            "tgi_queue_size": 0, "tgi_batch_current_size": 0, "tgi_batch_current_max_tokens": 0,
            "tgi_batch_max_total_tokens": max_batch_total_tokens}
        self.hists: dict[tuple[str, tuple], _Hist] = {}
        self._bucket_for = {
            "tgi_request_input_length": _linear(max_input_tokens),
            "tgi_request_generated_tokens": _linear(max_total_tokens),
            "tgi_request_max_new_tokens": _linear(max_total_tokens),
            "tgi_batch_next_size": [float(i + 1) for i in range(1024)],
        }
        for name in ("tgi_request_count", "tgi_request_success"):
            self.counters[(name, ())] = 0

    # -- primitives ---------------------------------------------------------------------------
    def inc(self, name: str, labels: tuple = (), by: float = 1) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0) + by

    def observe(self, name: str, value: float, labels: tuple = ()) -> None:
        key = (name, labels)
        h = self.hists.get(key)
        if h is None:
            h = self.hists[key] = _Hist(self._bucket_for.get(name, DURATION_BUCKETS))
        h.observe(value)

    # -- hooks (router and engine) ------------------------------------------------------------
    def request(self) -> None:
        self.inc("tgi_request_count")

    def failure(self, err: str) -> None:
        self.inc("tgi_request_failure", (("err", err),))

    def validated(self, input_length: int, max_new_tokens: int) -> None:
        self.observe("tgi_request_input_length", input_length)
        self.observe("tgi_request_max_new_tokens", max_new_tokens)

    def queue(self, size: int) -> None:
        self.gauges["tgi_queue_size"] = size

    def batch(self, size: int, max_tokens: int) -> None:
        self.gauges["tgi_batch_current_size"] = size
        self.gauges["tgi_batch_current_max_tokens"] = max_tokens

    def step(self, method: str, duration_s: float, size: int) -> None:
        lab = (("method", method),)
        self.inc("tgi_batch_inference_count", lab)
        self.inc("tgi_batch_inference_success", lab)
        self.observe("tgi_batch_inference_duration", duration_s, lab)
        self.observe("tgi_batch_forward_duration", duration_s, lab)
        if method == "prefill":
            self.observe("tgi_batch_next_size", size)

    def finished(self, seq, now_ns: int) -> None:
        total = (now_ns - seq.received_ns) / 1e9
        inference = (now_ns - seq.started_ns) / 1e9
        self.inc("tgi_request_success")
        self.observe("tgi_request_duration", total)
        self.observe("tgi_request_validation_duration", max(0.0, (seq.queued_ns - seq.received_ns) / 1e9))
        self.observe("tgi_request_queue_duration", (seq.started_ns - seq.queued_ns) / 1e9)
        self.observe("tgi_request_inference_duration", inference)
        self.observe("tgi_request_mean_time_per_token_duration", inference / max(1, seq.generated))
        self.observe("tgi_request_generated_tokens", seq.generated)

    # -- exposition ---------------------------------------------------------------------------
    def render(self) -> str:
        out: list[str] = []
        seen: set[str] = set()

        def head(name: str, kind: str) -> None:
            if name not in seen:
                seen.add(name)
                if name in HELP:
                    out.append(f"# HELP {name} {HELP[name]}")
                out.append(f"# TYPE {name} {kind}")

        def lab(labels: tuple, extra: str = "") -> str:
            parts = [f'{k}="{v}"' for k, v in labels]
            if extra:
                parts.append(extra)
            return "{" + ",".join(parts) + "}" if parts else ""

        for (name, labels), v in sorted(self.counters.items()):
            head(name, "counter")
            out.append(f"{name}{lab(labels)} {v:g}")
        for name, v in sorted(self.gauges.items()):
            head(name, "gauge")
            out.append(f"{name} {v:g}")
        for (name, labels), h in sorted(self.hists.items()):
            head(name, "histogram")
            cum = 0
            for b, c in zip(h.buckets, h.counts):
                cum += c
                le = 'le="%g"' % b
                out.append(f"{name}_bucket{lab(labels, le)} {cum}")
            inf = 'le="+Inf"'
            out.append(f"{name}_bucket{lab(labels, inf)} {h.count}")
            out.append(f"{name}_sum{lab(labels)} {h.sum:g}")
            out.append(f"{name}_count{lab(labels)} {h.count}")
        return "\n".join(out) + "\n"
