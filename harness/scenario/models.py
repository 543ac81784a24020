"""The scenario file's schema: what to load, how hard, against which replicas, judged by which SLO.

Every model forbids unknown keys so that a typo is an error naming its line, not a silent default.
Times are seconds (``_s``), rates are per second, token counts are tokens. Every number has a finite,
sane upper bound (a level of 1e12 or an output length of 10**29 is a typo, not a test), ``inf`` and
``nan`` are refused, and ``true``/``false`` are never taken as numbers.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from harness.urls import check_http_url

Protocol = Literal["tgi", "openai-completions", "openai-chat"]
#: ``auto``: asked of the first replica before any load (``/info``: TGI; ``/v1/models``: OpenAI chat)
TargetProtocol = Literal["tgi", "openai-completions", "openai-chat", "auto"]

# Upper bounds: far beyond any real test on one GPU, low enough that a typo cannot exhaust memory.
MAX_LEVEL = 100_000           # concurrent streams, or requests per second
MAX_REPLICAS = 256            # replicas of one model on one GPU
MAX_TOKENS = 1_000_000        # prompt or output length, tokens
MAX_SECONDS = 7 * 24 * 3600   # any duration or timeout
MAX_LIST = 1_000              # entries in levels, replicas, stages, stop strings, urls
MAX_REQUESTS = 1_000_000_000


def _not_bool(v):
    """pydantic takes ``true`` as 1; in a scenario that is always a mistake."""
    if isinstance(v, bool):
        raise ValueError(f"expected a number (got {str(v).lower()})")
    if isinstance(v, float) and v.is_integer() and abs(v) > 2**53:
        return int(v)  # 1e29 for a token count: "at most 1000000", not "cannot parse"
    return v


_NUM = BeforeValidator(_not_bool)
Requests = Annotated[int, _NUM, Field(gt=0, le=MAX_REQUESTS)]
Seconds = Annotated[float, _NUM, Field(gt=0, le=MAX_SECONDS)]
SecondsOrZero = Annotated[float, _NUM, Field(ge=0, le=MAX_SECONDS)]
Tokens = Annotated[int, _NUM, Field(gt=0, le=MAX_TOKENS)]
TokensF = Annotated[float, _NUM, Field(gt=0, le=MAX_TOKENS)]
Level = Annotated[float, _NUM, Field(gt=0, le=MAX_LEVEL)]
Port = Annotated[int, _NUM, Field(ge=1, le=65535)]
Share = Annotated[float, _NUM, Field(ge=0, le=1)]
Millis = Annotated[float, _NUM, Field(gt=0, le=MAX_SECONDS * 1000)]


def _url(v):
    return check_http_url(v)


HttpUrl = Annotated[str, BeforeValidator(_url)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------
# target: where the load goes and how the replicas come up
# --------------------------------------------------------------------------------------------
class EmulatorLauncher(Strict):
    """Replicas served by the built-in TGI emulator (the embedded default)."""

    kind: Literal["emulator"] = "emulator"
    profile: str = Field("cpu-demo", description="Emulator profile name or path to a profile YAML.")
    host: str = "127.0.0.1"
    base_port: Annotated[int, _NUM] = Field(0, ge=0, le=65535, description="First replica port; 0 picks free ports.")
    in_process: bool = Field(False, description="Serve from the harness process instead of a child process.")


class EndpointsLauncher(Strict):
    """Replicas that are already running; the harness only checks their health."""

    kind: Literal["endpoints"] = "endpoints"
    urls: list[HttpUrl] = Field(min_length=1, max_length=MAX_REPLICAS,
                                description="http:// or https:// base URLs; a path prefix is kept.")
    health_path: str = Field("/health", pattern=r"^/")

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        from harness.protocols.access import parse_url

        for u in v:
            parse_url(u)   # ValueError names the URL
        return v


class ProcessesLauncher(Strict):
    """Replicas started as local processes from an argument template (never through a shell).

    ``{port}``, ``{replica}``, ``{model}``, ``{fraction}`` (0.9/N) are substituted in each argument.
    """

    kind: Literal["processes"] = "processes"
    command: list[str] = Field(min_length=1)
    host: str = "127.0.0.1"
    base_port: Port = 8080
    health_path: str = Field("/health", pattern=r"^/")
    startup_timeout_s: Seconds = 300.0
    env: dict[str, str] = Field(default_factory=dict)


class ComposeLauncher(Strict):
    """Replicas brought up by ``docker compose`` (see ``slm-harness stack``)."""

    kind: Literal["compose"] = "compose"
    project_dir: str = "."
    profile: Literal["gpu", "vllm", "emulator"] = "gpu"
    base_port: Port = 8081
    health_path: str = Field("/health", pattern=r"^/")
    startup_timeout_s: Seconds = 900.0


Launcher = Annotated[
    Union[EmulatorLauncher, EndpointsLauncher, ProcessesLauncher, ComposeLauncher],
    Field(discriminator="kind"),
]


class Breaker(Strict):
    """Circuit breaker per replica (see docs/durability.md): a replica failing fast would otherwise
    look least loaded and draw the load."""

    enabled: bool = Field(True, description="false: the naive balancing, failing replicas included.")
    failures: Annotated[int, _NUM, Field(ge=1, le=10_000)] = Field(
        5, description="Consecutive failed requests that open it (one timeout opens it at once).")
    open_s: Seconds = Field(1.0, description="First pause before a half-open probe.")
    max_open_s: Seconds = Field(30.0, description="Longest pause (doubling per failed probe).")


class Tls(Strict):
    """How ``https://`` replicas are verified: the system's CA store unless ``ca_file`` names a PEM
    bundle; ``verify: false`` accepts any certificate (a test server; never a hosted endpoint)."""

    ca_file: str | None = Field(None, min_length=1, description="PEM file of CA certificates to trust.")
    verify: bool = True


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
#: set by the harness on every request; a scenario may not override them
_OWN_HEADERS = {"host", "content-length", "content-type", "transfer-encoding", "connection", "accept", "te",
                "upgrade", "expect"}
#: headers whose value is a credential: it must come from the environment (``${NAME}``), so that it
#: never lands in the scenario copy kept in the run directory
_SECRET_HEADER = re.compile(r"authorization|api[-_]?key|token|secret|password|cookie", re.I)


def header_env_refs(value: str) -> list[str]:
    """The environment variables a header value names (``${NAME}``)."""
    return _ENV_REF.findall(value)


class Target(Strict):
    protocol: TargetProtocol = "tgi"
    model: str = Field("smollm2-135m", min_length=1,
                       description="Sent as 'model' on OpenAI routes; with protocol auto and no model "
                                   "given, the first model /v1/models lists.")
    headers: dict[str, str] = Field(
        default_factory=dict, max_length=32,
        description="Extra request headers; ${NAME} in a value is the environment variable NAME, read "
                    "when the run starts and never written anywhere (Authorization: Bearer ${HF_TOKEN}).")
    tls: Tls = Field(default_factory=Tls)
    launcher: Launcher = Field(default_factory=EmulatorLauncher)
    balance: Literal["round-robin", "least-outstanding"] = Field(
        "least-outstanding", description="Client-side choice of replica for each request.")
    breaker: Breaker = Field(default_factory=Breaker)
    request_timeout_s: Seconds = 120.0
    connect_timeout_s: Seconds = 10.0

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name!r} is set by the harness itself")
            if len(value) > 8192 or any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: value must be one line of at most 8192 characters")
            refs = header_env_refs(value)
            for ref in refs:
                if not _ENV_NAME.match(ref):
                    raise ValueError(f"header {name!r}: ${{{ref}}} is not an environment variable name")
            if _SECRET_HEADER.search(name) and not refs:
                raise ValueError(f"header {name!r} carries a credential: write it as ${{ENV_VAR}} (e.g. "
                                 f"'Bearer ${{HF_TOKEN}}') so it stays out of files and logs")
        return v


# --------------------------------------------------------------------------------------------
# workload: what each request asks for
# --------------------------------------------------------------------------------------------
class Fixed(Strict):
    dist: Literal["fixed"] = "fixed"
    value: Tokens


class _Bounded(Strict):
    """A length distribution with ``min`` and ``max`` (``max`` may be open: None)."""

    @model_validator(mode="after")
    def _order(self):
        if self.max is not None and self.max < self.min:
            raise ValueError("max must be >= min")
        return self


class Uniform(_Bounded):
    dist: Literal["uniform"]
    min: Tokens
    max: Tokens


class Normal(_Bounded):
    dist: Literal["normal"]
    mean: TokensF
    std: Annotated[float, _NUM] = Field(ge=0, le=MAX_TOKENS)
    min: Tokens = 1
    max: Tokens | None = None


class LogNormal(_Bounded):
    dist: Literal["lognormal"]
    median: TokensF = Field(description="exp(mu): the median length in tokens")
    sigma: Annotated[float, _NUM] = Field(ge=0, le=10)
    min: Tokens = 1
    max: Tokens | None = None


LengthDist = Annotated[Union[Fixed, Uniform, Normal, LogNormal], Field(discriminator="dist")]


class Dataset(Strict):
    """Prompts (and optionally output lengths) from a local file: JSONL objects, ShareGPT-style
    conversations (JSON or JSONL), CSV or Parquet columns. Nothing is downloaded."""

    path: str
    format: Literal["jsonl", "sharegpt", "csv", "parquet"] = Field(
        "jsonl", description="jsonl: one object per line; sharegpt: records with 'conversations' "
                             "(from/value) or 'messages' (role/content), as a JSON array or JSONL; "
                             "csv / parquet: columns.")
    prompt_field: str = Field("prompt", min_length=1, description="Field or column of the prompt text.")
    output_tokens_field: str | None = Field(None, min_length=1, description="Field or column of the output length in tokens.")
    output_field: str | None = Field(None, min_length=1, description="Field or column of a reference answer: its length "
                                                         "in tokens becomes the output length.")
    tokenizer: str | None = Field(None, min_length=1, description="Path to a tokenizer.json (Hugging Face tokenizers) "
                                                      "to measure lengths; default: the emulator's one token per word.")
    min_prompt_tokens: Tokens | None = None
    max_prompt_tokens: Tokens | None = None
    min_output_tokens: Tokens | None = None
    max_output_tokens: Tokens | None = None
    sample: Requests | None = Field(None, description="Keep this many records, drawn with the workload's seed.")
    shuffle: bool = True

    @model_validator(mode="after")
    def _ranges(self):
        for what in ("prompt", "output"):
            lo, hi = getattr(self, f"min_{what}_tokens"), getattr(self, f"max_{what}_tokens")
            if lo is not None and hi is not None and hi < lo:
                raise ValueError(f"max_{what}_tokens must be >= min_{what}_tokens")
        if self.output_field and self.output_tokens_field:
            raise ValueError("give output_field or output_tokens_field, not both")
        return self


class SharedPrefix(Strict):
    """A few long system prompts shared by many requests: each request starts with one of
    ``count`` prefixes of ``tokens`` tokens (drawn with the seed), then its own prompt, so a
    server's prefix cache can skip the shared part's prefill."""

    count: Annotated[int, _NUM, Field(gt=0, le=10_000)] = Field(4, description="Distinct prefixes.")
    tokens: Tokens = Field(description="Length of each prefix in tokens.")


class Trace(Strict):
    """Replay a recorded trace, open loop: each request at its recorded time (from the window's
    start, divided by ``speedup``) with its recorded lengths. See docs/workloads.md."""

    path: str
    format: Literal["mooncake", "azure", "burstgpt"] = Field(
        description="mooncake: JSONL timestamp(ms)/input_length/output_length/hash_ids; azure: CSV "
                    "TIMESTAMP/ContextTokens/GeneratedTokens; burstgpt: CSV Timestamp/Request tokens/Response tokens.")
    speedup: Annotated[float, _NUM] = Field(1.0, gt=0, le=1000, description="Replay this many times faster.")
    start_s: SecondsOrZero = Field(0.0, description="Window start, seconds after the trace's first request.")
    end_s: Seconds | None = Field(None, description="Window end, seconds after the trace's first request.")
    block_tokens: Tokens = Field(512, description="Mooncake: tokens per hash_ids block.")

    @model_validator(mode="after")
    def _window(self):
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError("end_s must be > start_s")
        return self


class Sessions(Strict):
    """Multi-turn conversations: in closed loop each user holds one conversation after another; in
    open loop (mode rate) the level is conversations started per second. Each has ``turns`` turns,
    waiting ``think_time_s`` after each answer; each turn's prompt carries the whole history
    (every earlier prompt and an answer of the length asked for) and a new message of
    ``prompt_tokens``. See docs/workloads.md."""

    turns: Annotated[int, _NUM, Field(gt=0, le=1000)] = Field(description="Turns per conversation.")
    think_time_s: SecondsOrZero = Field(0.0, description="Wait after each answer before the next turn.")
    think: Literal["fixed", "exponential"] = Field("fixed", description="fixed: exactly think_time_s; "
                                                   "exponential: drawn with that mean (seeded).")
    sticky: bool = Field(False, description="Send every turn of a conversation to the replica of its first turn.")


class Sampling(Strict):
    temperature: Annotated[float, _NUM] | None = Field(None, ge=0, le=100)
    top_p: Annotated[float, _NUM] | None = Field(None, gt=0, le=1)
    top_k: Tokens | None = None
    repetition_penalty: Annotated[float, _NUM] | None = Field(None, gt=0, le=100)
    ignore_eos: bool = Field(True, description="Ask for exactly the output length (TGI/OpenAI servers that support it).")
    stop: list[str] = Field(default_factory=list, max_length=MAX_LIST)


class Workload(Strict):
    seed: Annotated[int, _NUM] = Field(0, ge=-(2**63), le=2**63 - 1)
    prompt_tokens: LengthDist = Field(default_factory=lambda: Fixed(value=128))
    output_tokens: LengthDist = Field(default_factory=lambda: Fixed(value=128))
    dataset: Dataset | None = None
    trace: Trace | None = Field(None, description="Replay a trace (load.mode rate; arrivals and lengths come from it).")
    sessions: Sessions | None = Field(None, description="Multi-turn conversations (concurrency: per user; rate: started per second).")
    shared_prefix: SharedPrefix | None = Field(None, description="Prefix repetition: shared long prompt prefixes.")
    system_prompt: str | None = Field(None, description="Chat protocol only: prepended system message.")
    sampling: Sampling = Field(default_factory=Sampling)


# --------------------------------------------------------------------------------------------
# load: how hard, for how long
# --------------------------------------------------------------------------------------------
class Stage(Strict):
    """One ramp stage: reach ``target`` (users or req/s) over ``duration_s``, linearly or
    exponentially (a constant growth factor per second; from 0 it starts at 1% of ``target``)."""

    duration_s: Seconds
    target: Level
    shape: Literal["linear", "exponential"] = Field("linear", description="How the value moves to target.")


class Load(Strict):
    mode: Literal["concurrency", "rate"] = Field(
        "concurrency", description="concurrency: closed loop with N streams; rate: open loop at N req/s.")
    arrival: Literal["constant", "poisson", "gamma"] = Field(
        "poisson", description="Open loop only; gamma: gaps with shape 'burstiness' and the same mean rate.")
    burstiness: Annotated[float, _NUM] = Field(
        1.0, gt=0, le=100, description="Gamma arrivals: shape of the gaps; < 1 burstier than Poisson, "
                                       "1 = Poisson, > 1 more even. Must stay 1 for other arrivals.")
    max_in_flight: Annotated[int, _NUM, Field(gt=0, le=MAX_LEVEL)] | None = Field(
        None, description="Open loop only: most requests in flight at once; arrivals beyond it wait "
                          "(counted as held back) and their latency still runs from the intended time.")
    levels: Annotated[list[Level], Field(max_length=MAX_LIST)] | Literal["auto"] = Field(
        default_factory=lambda: [8.0], description="Concurrency or rate per level, run back to back; 'auto' searches for the knee.")
    replicas: list[Annotated[int, _NUM, Field(gt=0, le=MAX_REPLICAS)]] = Field(
        default_factory=lambda: [1], max_length=MAX_LIST)
    duration_s: Seconds = Field(30.0, description="Measured window per level.")
    warmup_s: SecondsOrZero = 5.0
    cooldown_s: SecondsOrZero = 2.0
    stages: list[Stage] = Field(default_factory=list, max_length=MAX_LIST,
                                description="Optional ramp before each level's warm-up.")
    max_requests: Requests | None = None
    repeats: Annotated[int, _NUM, Field(gt=0, le=MAX_LIST)] = Field(
        1, description="Run each cell this many times, interleaved across the levels of a replica count.")
    auto_max_level: Level = 1024
    auto_max_cells: Annotated[int, _NUM, Field(gt=0, le=MAX_LIST)] = 8
    auto_probe_s: SecondsOrZero = Field(
        3.0, description="levels: auto: seconds of each of the two short probe windows (1 and 8 "
                         "streams) that estimate where to start; 0 starts at the lowest level.")
    auto_latency_growth: Annotated[float, _NUM, Field(gt=1, le=100)] = Field(
        2.0, description="levels: auto: TTFT or TPOT p50 growing more than this many times as fast "
                         "as the level is super-linear (2: x4 latency for x2 load) and marks the knee.")
    auto_min_gain: Annotated[float, _NUM, Field(gt=0, lt=1)] = Field(
        0.05, description="levels: auto: throughput growing by less than this share over the best "
                          "lower level has stopped growing (in the probe that picks the starting "
                          "levels and in the explore after it).")
    auto_saturation_min_s: Seconds = Field(
        5.0, description="levels: auto: windows shorter than this never fire the over-saturation test.")
    auto_saturation_rise: Annotated[float, _NUM, Field(gt=0, le=100)] = Field(
        0.5, description="levels: auto: the over-saturation test's least rise of TTFT (and in open "
                         "loop of requests in flight) over the window, as a share of its median.")

    @field_validator("levels")
    @classmethod
    def _not_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("levels must not be empty")
        return v

    @field_validator("replicas")
    @classmethod
    def _replicas_not_empty(cls, v):
        if not v:
            raise ValueError("replicas must not be empty")
        return v

    @model_validator(mode="after")
    def _open_loop_knobs(self):
        if self.burstiness != 1.0 and self.arrival != "gamma":
            raise ValueError("burstiness applies to arrival: gamma only")
        if self.max_in_flight is not None and self.mode != "rate":
            raise ValueError("max_in_flight applies to mode: rate (open loop) only")
        if self.mode != "rate" and any(st.shape != "linear" for st in self.stages):
            raise ValueError("an exponential stage applies to mode: rate (open loop) only")
        return self


# --------------------------------------------------------------------------------------------
# slo, telemetry, store
# --------------------------------------------------------------------------------------------
class Percentiles(Strict):
    """Upper bounds in seconds for named percentiles."""

    p50: Seconds | None = None
    p90: Seconds | None = None
    p95: Seconds | None = None
    p99: Seconds | None = None
    p999: Seconds | None = None

    def items(self) -> list[tuple[float, float]]:
        q = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
        return [(q[k], v) for k, v in self.model_dump().items() if v is not None]


class Slo(Strict):
    ttft_s: Percentiles | None = None
    itl_s: Percentiles | None = None
    tpot_s: Percentiles | None = None
    e2e_s: Percentiles | None = None
    max_error_rate: Annotated[float, _NUM] | None = Field(None, ge=0, le=1)
    min_output_tokens_per_s: Annotated[float, _NUM, Field(gt=0, le=1e9)] | None = None


class ServerMetrics(Strict):
    """Each replica's Prometheus ``/metrics`` scraped during the run (docs/server-metrics.md)."""

    enabled: bool = True
    rate_hz: Annotated[float, _NUM] = Field(2.0, gt=0, le=20, description="Scrapes per second per replica.")
    timeout_s: Annotated[float, _NUM] = Field(1.0, gt=0, le=30, description="One scrape's time limit.")
    full_every_s: Annotated[float, _NUM] = Field(
        5.0, ge=0, le=3600, description="Every sample (histograms included) at most this often; the "
        "queue, batch, KV-cache gauges and request counters at every scrape (0: everything every scrape).")
    store_buckets: bool = Field(False, description="Also write histograms' _bucket series to the store "
                                "(~97% of a TGI scrape's samples); the run directory always keeps them.")


class Telemetry(Strict):
    enabled: bool = True
    source: Literal["auto", "nvml", "emulated", "none"] = Field(
        "auto", description="auto: NVML when present, else the emulator's modeled power, else none.")
    rate_hz: Annotated[float, _NUM] = Field(20.0, gt=0, le=100)
    gpus: list[Annotated[int, _NUM, Field(ge=0, le=1023)]] | None = Field(None, max_length=1024)
    server_metrics: ServerMetrics = Field(default_factory=ServerMetrics)


class Validity(Strict):
    """Thresholds of each cell's verdict (valid / warn / invalid); see docs/trust.md."""

    reader_lag_warn_ms: Millis = Field(20.0, description="Stream reader's longest wait for data: warn above.")
    reader_lag_invalid_ms: Millis | None = Field(None, description="... invalid above (off by default: one long pause merges a few tokens; a starved generator shows in cpu_wait).")
    send_lag_warn_ms: Millis = Field(10.0, description="Open loop: p99 of send time - intended time, warn above.")
    send_lag_invalid_ms: Millis = Field(100.0, description="... invalid above.")
    cpu_wait_warn: Share = Field(0.1, description="Share of the window the generator waited for a CPU: warn above.")
    cpu_wait_invalid: Share = Field(0.5, description="... invalid above (a host that makes the generator wait half the time decides the figures).")
    cpu_busy_warn: Share = Field(0.9, description="Share of the window the generator ran on a CPU: warn above.")
    energy_disagree_warn: Share = Field(0.05, description="Counter vs power integral, relative: warn above.")
    min_power_refreshes: Annotated[int, _NUM, Field(gt=0, le=MAX_LIST)] = Field(10, description="Warn when a window spans fewer power readings (invalid below one).")
    clock_drift_warn: Share = Field(0.15, description="SM clock range / median inside the window: warn above.")
    min_tail_requests: Annotated[int, _NUM, Field(gt=0, le=MAX_LIST)] = Field(10, description="Requests beyond the SLO percentile (n x (1-q)): warn below.")
    steadiness_warn: Share = Field(0.2, description="|tokens/s 2nd half - 1st half| / mean: warn above.")
    steadiness_invalid: Share | None = Field(None, description="... invalid above (off by default: a ramp inside the window is flagged, not voided).")
    error_share_warn: Share = Field(0.05, description="Failed or partial requests: warn above.")
    error_share_invalid: Share | None = Field(None, description="... invalid above (off by default: errors are the server's, the SLO judges them).")
    idle_baseline_s: SecondsOrZero = Field(1.0, description="Idle power measured before each replica group's first cell (0: off).")
    prefill_weight: Annotated[float, _NUM, Field(ge=0, le=1000)] = Field(1.0, description="Per-request energy: work of one prompt token.")
    decode_weight: Annotated[float, _NUM, Field(ge=0, le=1000)] = Field(1.0, description="Per-request energy: work of one output token.")


class InfluxDB(Strict):
    url: HttpUrl
    api: Literal["v2", "v1"] = "v2"
    org: str | None = None
    bucket: str | None = None
    database: str | None = Field(None, description="InfluxQL database (v1 API, or the DBRP mapping on 2.x).")
    token_env: str = "INFLUXDB_TOKEN"
    token_file: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    spool_dir: str | None = None
    batch_size: Annotated[int, _NUM, Field(gt=0, le=1_000_000)] = 5000
    flush_interval_s: Annotated[float, _NUM, Field(gt=0, le=3600)] = 1.0


class Store(Strict):
    results_dir: str = "results"
    influxdb: InfluxDB | None = None


class Scenario(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    description: str = ""
    target: Target = Field(default_factory=Target)
    workload: Workload = Field(default_factory=Workload)
    load: Load = Field(default_factory=Load)
    slo: Slo = Field(default_factory=Slo)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    store: Store = Field(default_factory=Store)
    validity: Validity = Field(default_factory=Validity)

    @model_validator(mode="after")
    def _trace_is_open_loop(self):
        if self.workload.trace is not None:
            if self.load.mode != "rate" or self.load.stages:
                raise ValueError("a trace replays open loop: load.mode must be rate, without stages")
            if not isinstance(self.load.levels, list) or len(self.load.levels) != 1:
                raise ValueError("a trace replays as one cell: give one level (a label; the trace sets the rate)")
            if self.workload.dataset is not None or self.workload.shared_prefix is not None \
                    or self.workload.sessions is not None:
                raise ValueError("a trace gives the requests: no dataset, shared_prefix or sessions beside it")
        if self.workload.sessions is not None and self.load.max_in_flight is not None:
            raise ValueError("sessions started per second (mode rate) take no max_in_flight")
        return self
