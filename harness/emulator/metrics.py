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
    "tgi_batch_decode_duration": "Time spent decoding a batch per method (prefill or decode)",
    "tgi_batch_filter_duration": "Time spent filtering batches and sending generated tokens per method",
    "tgi_batch_concat": "Number of batch concatenates",
    "tgi_batch_concat_duration": "Time spent concatenating batches",
    "tgi_batch_inference_failure": "Number of failed inference calls per method (prefill or decode)",
    "tgi_request_skipped_tokens": "Speculated tokens per request",
}

#: vLLM's names (``vllm/engine/metrics.py``) for what the same hooks measure
VLLM_HELP = {
    "vllm:num_requests_running": "Number of requests currently running on GPU.",
    "vllm:num_requests_waiting": "Number of requests waiting to be processed.",
    "vllm:gpu_cache_usage_perc": "GPU KV-cache usage. 1 means 100 percent usage.",
    "vllm:prompt_tokens_total": "Number of prefill tokens processed.",
    "vllm:generation_tokens_total": "Number of generation tokens processed.",
    "vllm:request_success_total": "Count of successfully processed requests.",
    "vllm:e2e_request_latency_seconds": "Histogram of end to end request latency in seconds.",
    "vllm:time_to_first_token_seconds": "Histogram of time to first token in seconds.",
    "vllm:time_per_output_token_seconds": "Histogram of time per output token in seconds.",
    "vllm:request_queue_time_seconds": "Histogram of time spent in WAITING phase for request.",
    "vllm:request_inference_time_seconds": "Histogram of time spent in RUNNING phase for request.",
    "vllm:request_prompt_tokens": "Number of prefill tokens processed.",
    "vllm:request_generation_tokens": "Number of generation tokens processed.",
}
_VLLM_HISTS = {"tgi_request_duration": "vllm:e2e_request_latency_seconds",
               "emulator_ttft": "vllm:time_to_first_token_seconds",
               "tgi_request_mean_time_per_token_duration": "vllm:time_per_output_token_seconds",
               "tgi_request_queue_duration": "vllm:request_queue_time_seconds",
               "tgi_request_inference_duration": "vllm:request_inference_time_seconds",
               "tgi_request_input_length": "vllm:request_prompt_tokens",
               "tgi_request_generated_tokens": "vllm:request_generation_tokens"}


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
        for method in ("prefill", "decode"):      # TGI registers them at their first use
            self.counters[("tgi_batch_inference_failure", (("method", method),))] = 0
        self.model_name = ""

    # -- primitives ---------------------------------------------------------------------------
    def inc(self, name: str, labels: tuple = (), by: float = 1) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0) + by

    def observe(self, name: str, value: float, labels: tuple = (), n: int = 1) -> None:
        key = (name, labels)
        h = self.hists.get(key)
        if h is None:
            h = self.hists[key] = _Hist(self._bucket_for.get(name, DURATION_BUCKETS))
        if n == 1:
            h.observe(value)
        elif n > 1:
            h.counts[bisect_left(h.buckets, value)] += n
            h.sum += value * n
            h.count += n

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

    def step(self, method: str, duration_s: float, size: int, concat: bool = False) -> None:
        """One forward pass. Its duration is split as TGI's shards report it: nearly all forward,
        a little decoding (detokenising) and filtering."""
        lab = (("method", method),)
        self.inc("tgi_batch_inference_count", lab)
        self.inc("tgi_batch_inference_success", lab)
        self.observe("tgi_batch_inference_duration", duration_s, lab)
        self.observe("tgi_batch_forward_duration", duration_s * 0.96, lab)
        self.observe("tgi_batch_decode_duration", duration_s * 0.03, lab)
        self.observe("tgi_batch_filter_duration", duration_s * 0.01, lab)
        if method == "prefill":
            self.observe("tgi_batch_next_size", size)
            if concat:     # new requests joined a running batch (TGI 3 chunks prefills)
                self.inc("tgi_batch_concat", (("reason", "chunking"),))
                self.observe("tgi_batch_concat_duration", duration_s, (("method", "decode"),))

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
        self.observe("tgi_request_skipped_tokens", 0.0, n=seq.generated)   # no speculation
        first = getattr(seq, "first_ns", 0)
        if first:
            self.observe("emulator_ttft", (first - seq.received_ns) / 1e9)

    # -- exposition ---------------------------------------------------------------------------
    def render(self, style: str = "tgi") -> str:
        """Prometheus text: TGI's names, vLLM's (``style="vllm"``), or nothing (``"none"``)."""
        if style == "vllm":
            return self._render_vllm()
        if style == "none":
            return ""
        return self._render_tgi()

    def _render_vllm(self) -> str:
        lab = (("model_name", self.model_name),)
        g = self.gauges
        counters = {("vllm:request_success_total", lab + (("finished_reason", "length"),)):
                    self.counters.get(("tgi_request_success", ()), 0)}
        hists = {}
        for (name, labels), h in self.hists.items():
            if name in _VLLM_HISTS and not labels:
                hists[(_VLLM_HISTS[name], lab)] = h
        inp = self.hists.get(("tgi_request_input_length", ()))
        gen = self.hists.get(("tgi_request_generated_tokens", ()))
        counters[("vllm:prompt_tokens_total", lab)] = inp.sum if inp else 0
        counters[("vllm:generation_tokens_total", lab)] = gen.sum if gen else 0
        gauges = {"vllm:num_requests_running": g["tgi_batch_current_size"],
                  "vllm:num_requests_waiting": g["tgi_queue_size"],
                  "vllm:gpu_cache_usage_perc": g["tgi_batch_current_max_tokens"] / max(1, g["tgi_batch_max_total_tokens"])}
        return self._expose(counters, {(k, lab): v for k, v in gauges.items()}, hists, VLLM_HELP, total_suffix=True)

    def _render_tgi(self) -> str:
        hists = {k: h for k, h in self.hists.items() if k[0] != "emulator_ttft"}
        return self._expose(self.counters, {(k, ()): v for k, v in self.gauges.items()}, hists, HELP)

    @staticmethod
    def _expose(counters: dict, gauges: dict, hists: dict, helps: dict, total_suffix: bool = False) -> str:
        out: list[str] = []
        seen: set[str] = set()

        def head(name: str, kind: str) -> None:
            if name not in seen:
                seen.add(name)
                help_text = helps.get(name) or helps.get(name + "_total")
                if help_text:
                    out.append(f"# HELP {name} {help_text}")
                out.append(f"# TYPE {name} {kind}")

        def lab(labels: tuple, extra: str = "") -> str:
            parts = [f'{k}="{v}"' for k, v in labels]
            if extra:
                parts.append(extra)
            return "{" + ",".join(parts) + "}" if parts else ""

        for (name, labels), v in sorted(counters.items()):
            head(name[:-6] if total_suffix and name.endswith("_total") else name, "counter")
            out.append(f"{name}{lab(labels)} {v:g}")
        for (name, labels), v in sorted(gauges.items()):
            head(name, "gauge")
            out.append(f"{name}{lab(labels)} {v:g}")
        for (name, labels), h in sorted(hists.items(), key=lambda kv: kv[0]):
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
