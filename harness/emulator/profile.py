"""Emulator profiles: what one replica's model, engine and the shared GPU look like.

A profile is a YAML file (``harness/emulator/profiles/NAME.yaml`` or any path) validated by the
pydantic models below; a bad profile is an :class:`InputError` naming file, line and field, like a
bad scenario. The numbers are documented in ``docs/emulator.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, ValidationError

from harness.errors import InputError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """The served model: its name in ``/info`` and the sizes the roofline terms need."""

    id: str
    params: PositiveInt = Field(description="parameter count (prefill FLOPs = 2 * params * tokens)")
    weight_bytes: PositiveInt = Field(description="bytes read from GPU memory per decode step")
    layers: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    dtype_bytes: PositiveInt = 2
    vocab_size: PositiveInt = 32000

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


class GpuSpec(_Strict):
    """The one simulated GPU all replicas share, with its modeled power draw."""

    name: str
    memory_bytes: PositiveInt
    mem_bandwidth_gb_s: PositiveFloat = Field(description="HBM bandwidth, GB/s (1e9 bytes)")
    peak_tflops: PositiveFloat = Field(description="dense bf16 TFLOP/s")
    mfu: PositiveFloat = Field(0.4, le=1, description="fraction of peak reached by prefill")
    idle_w: NonNegativeFloat
    active_w: NonNegativeFloat = Field(description="power added at 100% utilisation")
    power_exponent: PositiveFloat = Field(1.0, description="power = idle + active * util**exponent")
    attention_w: NonNegativeFloat = Field(0.0, description="power added per 10^6 (query token x cache token) "
                                          "pairs a second: an engine whose batches attend through one dense mask "
                                          "(transformers' paged|sdpa) does work that grows with batch**2, which "
                                          "draws power beyond what the busy fraction says; 0 for flash-attention "
                                          "engines")
    power_limit_w: PositiveFloat
    sm_clock_mhz: PositiveFloat
    temp_idle_c: float = 33.0
    temp_per_w: float = Field(0.08, description="degrees C per watt above idle (steady state)")
    replica_overhead_bytes: int = Field(0, ge=0, description="memory each replica holds besides weights and KV")


class Limits(_Strict):
    """TGI router limits (same names as TGI's launcher flags)."""

    max_concurrent_requests: PositiveInt = 128
    max_input_tokens: PositiveInt = 1024
    max_total_tokens: PositiveInt = 2048
    max_batch_total_tokens: PositiveInt = 100_000
    max_batch_prefill_tokens: PositiveInt = 4096
    max_batch_size: PositiveInt | None = None
    max_best_of: PositiveInt = 2
    max_stop_sequences: PositiveInt = 4
    max_client_batch_size: PositiveInt = 4
    max_top_n_tokens: int = Field(5, ge=0)
    budget_includes_decode: bool = Field(False, description="the step's token budget "
                                         "(max_batch_prefill_tokens) also counts one token per decoding sequence, "
                                         "which are scheduled first (transformers' continuous batching, vLLM's "
                                         "max_num_batched_tokens); TGI budgets prefill tokens only")
    kv_admission: Literal["reserve", "paged"] = Field("reserve", description="reserve: a request holds its "
                                                      "prompt + max new tokens of max_batch_total_tokens from "
                                                      "admission (TGI); paged: it holds what it has computed so far, "
                                                      "and new prompts start only while kv_free_margin of the "
                                                      "cache is free (transformers, vLLM)")
    kv_free_margin: float = Field(0.0, ge=0, lt=1, description="paged: the fraction of max_batch_total_tokens "
                                  "that must be free for a new prompt to start (transformers' safety margin 0.2)")
    graph_q_interval: int = Field(0, ge=0, description="CUDA graphs captured on first use: a step's query tokens "
                                  "are padded to a multiple of this (transformers: 64), its cache reads to a "
                                  "multiple of graph_kv_interval, and a step whose padded shape has no graph yet "
                                  "costs timing.graph_capture_ms more; 0: no graphs (TGI and vLLM capture theirs "
                                  "at start-up)")
    graph_kv_interval: PositiveInt = Field(16384, description="the cache-read padding of a graph's shape "
                                           "(transformers: 64 blocks of 256 tokens)")


class RooflineTiming(_Strict):
    """Step time = host part (parallel across replicas) + GPU part (shared, contended).

    host_ms = host_step_ms + host_per_seq_ms * batch + host_per_seq2_ms * batch**2
              + host_per_prefill_token_ms * prefill_tokens
    gpu_ms  = gpu_step_ms + gpu_per_seq_ms * batch + (weights + KV read) / bandwidth
              + 2 * params * prefill_tokens / (peak * mfu) + gpu_per_mpair_ms * pairs / 1e6
    (pairs: the step's query tokens times the cache tokens they attend through one dense mask)
    The GPU part is stretched by processor sharing: 1 / (1 - utilisation of the other replicas)
    (capped by ``contention_cap``), plus ``switch_overhead`` per other busy replica.
    """

    mode: Literal["roofline"] = "roofline"
    host_step_ms: NonNegativeFloat = 0.0
    host_per_seq_ms: NonNegativeFloat = 0.0
    host_per_seq2_ms: NonNegativeFloat = Field(0.0, description="host work that grows with batch**2 (a scheduler "
                                               "that scans every sequence's cache pages)")
    host_per_prefill_token_ms: NonNegativeFloat = 0.0
    gpu_step_ms: NonNegativeFloat = 0.0
    gpu_per_seq_ms: NonNegativeFloat = 0.0
    gpu_per_prefill_token_ms: NonNegativeFloat = 0.0
    gpu_per_mpair_ms: NonNegativeFloat = Field(0.0, description="GPU time per million (query token, cache token) "
                                               "pairs of a step's attention, for an engine that attends through one "
                                               "dense mask over the whole batch (transformers' paged|sdpa: every "
                                               "query token of the step against every cache token the step reads); "
                                               "0 for flash-attention engines, whose work per step follows each "
                                               "sequence's own length")
    contention_cap: float = Field(0.95, ge=0, lt=1)
    switch_overhead: NonNegativeFloat = 0.0
    admission_ms: NonNegativeFloat = Field(0.0, description="from a request's arrival to its place in the queue "
                                           "(HTTP, tokenising, validating), uncontended")
    frontend_ms: NonNegativeFloat = Field(0.0, description="work of the replica's one front-end thread per "
                                          "arriving request, one request at a time in arrival order (a Python "
                                          "server's event loop); a burst of arrivals queues here")
    frontend_per_seq: NonNegativeFloat = Field(0.0, description="how much each running sequence stretches that "
                                               "work: the same thread streams every token out and shares one "
                                               "interpreter lock with the step loop")
    frontend_fifo: bool = Field(False, description="the front end takes requests in one after another, each "
                                "entering the queue as soon as it is done (an async server handing each request "
                                "over when parsed), instead of interleaving a burst so that it enters together")
    step_jitter: NonNegativeFloat = Field(0.0, le=1.0, description="coefficient of variation of each step's host "
                                          "time (an interpreter's collections, the scheduler's own variance), "
                                          "seeded per replica: it shifts where step boundaries fall against "
                                          "arrivals, so a closed loop's waves split differently from one to the next")
    graph_capture_ms: NonNegativeFloat = Field(0.0, description="what a step with a new padded shape costs more "
                                               "while its CUDA graph is captured (limits.graph_q_interval)")
    host_speed: PositiveFloat = Field(1.0, description="how many times faster this host's CPU runs the server "
                                      "than the host the host-side terms were fitted on: every CPU cost (host_*, "
                                      "admission_ms, frontend_ms, graph_capture_ms) is divided by it, so a profile "
                                      "carries to another host by fitting this one number (--calibrate --fit "
                                      "host_speed)")


class FixedTiming(_Strict):
    """Every stream gets exactly ``ttft_ms`` then one token every ``itl_ms``, whatever the load.

    For the load generator's fidelity benchmark and the emulator's own speed benchmark: the
    schedule is known in advance, so any deviation measured by a client is the client's.
    """

    mode: Literal["fixed"]
    ttft_ms: NonNegativeFloat
    itl_ms: PositiveFloat
    util_streams: PositiveInt = Field(256, description="streams at which modeled GPU util reaches 100%")


Timing = Annotated[Union[RooflineTiming, FixedTiming], Field(discriminator="mode")]


class Tokenizer(_Strict):
    """The emulator's tokenizer: whitespace-separated words are tokens."""

    chat_tokens_per_message: int = Field(4, ge=0, description="template tokens around each chat message")
    chat_tokens_generation_prompt: int = Field(3, ge=0, description="template tokens opening the reply")


class Profile(_Strict):
    name: str
    description: str = ""
    server: Literal["tgi", "vllm", "openai"] = Field("tgi", description="the server it stands in for "
                                                     "(slm-harness emulate --server overrides it)")
    model: ModelSpec
    gpu: GpuSpec
    limits: Limits = Field(default_factory=Limits)
    timing: Timing = Field(default_factory=RooflineTiming)
    tokenizer: Tokenizer = Field(default_factory=Tokenizer)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile YAML by path; InputError on any problem."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") or "/" in name_or_path):
        p = PROFILE_DIR / f"{name_or_path}.yaml"
        if not p.is_file():
            raise InputError(f"unknown emulator profile {name_or_path!r} "
                             f"(built in: {', '.join(available_profiles())}; or give a path to a YAML file)",
                             field="profile")
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(f"cannot read profile: {e.__class__.__name__}", file=str(p)) from None
    return parse_profile(text, file=str(p))


def parse_profile(text: str, file: str = "<profile>") -> Profile:
    from harness.scenario.loader import _field_path, _locate, _message, read_yaml

    root, data = read_yaml(text, file)
    if not isinstance(data, dict):
        raise InputError("a profile must be a mapping (name, model, gpu, limits, timing)", file=file, line=1)
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        err = max(e.errors(), key=lambda x: len(x["loc"]))
        line, loc = _locate(root, tuple(p for p in err["loc"] if p not in ("roofline", "fixed")))
        raise InputError(_message(err), file=file, line=line, field=_field_path(loc)) from None
