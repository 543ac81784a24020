"""The scenario file's schema: what to load, how hard, against which replicas, judged by which SLO.

Every model forbids unknown keys so that a typo is an error naming its line, not a silent default.
Times are seconds (``_s``), rates are per second, token counts are tokens.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

Protocol = Literal["tgi", "openai-completions", "openai-chat"]
#: ``auto``: asked of the first replica before any load (``/info``: TGI; ``/v1/models``: OpenAI chat)
TargetProtocol = Literal["tgi", "openai-completions", "openai-chat", "auto"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# target: where the load goes and how the replicas come up
# --------------------------------------------------------------------------------------------
class EmulatorLauncher(Strict):
    """Replicas served by the built-in TGI emulator (the embedded default)."""

    kind: Literal["emulator"] = "emulator"
    profile: str = Field("cpu-demo", description="Emulator profile name or path to a profile YAML.")
    host: str = "127.0.0.1"
    base_port: int = Field(0, ge=0, le=65535, description="First replica port; 0 picks free ports.")
    in_process: bool = Field(False, description="Serve from the harness process instead of a child process.")


class EndpointsLauncher(Strict):
    """Replicas that are already running; the harness only checks their health."""

    kind: Literal["endpoints"] = "endpoints"
    urls: list[str] = Field(min_length=1, description="http:// or https:// base URLs; a path prefix is kept.")
    health_path: str = "/health"

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
    base_port: int = Field(8080, ge=1, le=65535)
    health_path: str = "/health"
    startup_timeout_s: PositiveFloat = 300.0
    env: dict[str, str] = Field(default_factory=dict)


class ComposeLauncher(Strict):
    """Replicas brought up by ``docker compose`` (see ``slm-harness stack``)."""

    kind: Literal["compose"] = "compose"
    project_dir: str = "."
    profile: Literal["gpu", "emulator"] = "gpu"
    base_port: int = Field(8081, ge=1, le=65535)
    health_path: str = "/health"
    startup_timeout_s: PositiveFloat = 900.0


Launcher = Annotated[
    Union[EmulatorLauncher, EndpointsLauncher, ProcessesLauncher, ComposeLauncher],
    Field(discriminator="kind"),
]


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
    request_timeout_s: PositiveFloat = 120.0
    connect_timeout_s: PositiveFloat = 10.0

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
    value: PositiveInt


class Uniform(Strict):
    dist: Literal["uniform"]
    min: PositiveInt
    max: PositiveInt

    @model_validator(mode="after")
    def _order(self):
        if self.max < self.min:
            raise ValueError("max must be >= min")
        return self


class Normal(Strict):
    dist: Literal["normal"]
    mean: PositiveFloat
    std: float = Field(ge=0)
    min: PositiveInt = 1
    max: PositiveInt | None = None


class LogNormal(Strict):
    dist: Literal["lognormal"]
    median: PositiveFloat = Field(description="exp(mu): the median length in tokens")
    sigma: float = Field(ge=0)
    min: PositiveInt = 1
    max: PositiveInt | None = None


LengthDist = Annotated[Union[Fixed, Uniform, Normal, LogNormal], Field(discriminator="dist")]


class Dataset(Strict):
    """Prompts (and optionally output lengths) from a JSONL file, one object per line."""

    path: str
    prompt_field: str = "prompt"
    output_tokens_field: str | None = None
    shuffle: bool = True


class Sampling(Strict):
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: PositiveInt | None = None
    repetition_penalty: PositiveFloat | None = None
    ignore_eos: bool = Field(True, description="Ask for exactly the output length (TGI/OpenAI servers that support it).")
    stop: list[str] = Field(default_factory=list)


class Workload(Strict):
    seed: int = 0
    prompt_tokens: LengthDist = Field(default_factory=lambda: Fixed(value=128))
    output_tokens: LengthDist = Field(default_factory=lambda: Fixed(value=128))
    dataset: Dataset | None = None
    system_prompt: str | None = Field(None, description="Chat protocol only: prepended system message.")
    sampling: Sampling = Field(default_factory=Sampling)


# --------------------------------------------------------------------------------------------
# load: how hard, for how long
# --------------------------------------------------------------------------------------------
class Stage(Strict):
    """One ramp stage: reach ``target`` (users or req/s) linearly over ``duration_s``."""

    duration_s: PositiveFloat
    target: PositiveFloat


class Load(Strict):
    mode: Literal["concurrency", "rate"] = Field(
        "concurrency", description="concurrency: closed loop with N streams; rate: open loop at N req/s.")
    arrival: Literal["constant", "poisson"] = Field("poisson", description="Open loop only.")
    levels: list[PositiveFloat] | Literal["auto"] = Field(
        default_factory=lambda: [8.0], description="Concurrency or rate per level, run back to back; 'auto' searches for the knee.")
    replicas: list[PositiveInt] = Field(default_factory=lambda: [1])
    duration_s: PositiveFloat = Field(30.0, description="Measured window per level.")
    warmup_s: float = Field(5.0, ge=0)
    cooldown_s: float = Field(2.0, ge=0)
    stages: list[Stage] = Field(default_factory=list, description="Optional ramp before each level's warm-up.")
    max_requests: PositiveInt | None = None
    repeats: PositiveInt = Field(1, description="Run each cell this many times, interleaved across the levels of a replica count.")
    auto_max_level: PositiveFloat = 1024
    auto_max_cells: PositiveInt = 8

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


# --------------------------------------------------------------------------------------------
# slo, telemetry, store
# --------------------------------------------------------------------------------------------
class Percentiles(Strict):
    """Upper bounds in seconds for named percentiles."""

    p50: PositiveFloat | None = None
    p90: PositiveFloat | None = None
    p95: PositiveFloat | None = None
    p99: PositiveFloat | None = None
    p999: PositiveFloat | None = None

    def items(self) -> list[tuple[float, float]]:
        q = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
        return [(q[k], v) for k, v in self.model_dump().items() if v is not None]


class Slo(Strict):
    ttft_s: Percentiles | None = None
    itl_s: Percentiles | None = None
    tpot_s: Percentiles | None = None
    e2e_s: Percentiles | None = None
    max_error_rate: float | None = Field(None, ge=0, le=1)
    min_output_tokens_per_s: PositiveFloat | None = None


class Telemetry(Strict):
    enabled: bool = True
    source: Literal["auto", "nvml", "emulated", "none"] = Field(
        "auto", description="auto: NVML when present, else the emulator's modeled power, else none.")
    rate_hz: float = Field(20.0, gt=0, le=100)
    gpus: list[int] | None = None


class Validity(Strict):
    """Thresholds of each cell's verdict (valid / warn / invalid); see docs/trust.md."""

    reader_lag_warn_ms: PositiveFloat = Field(20.0, description="Stream reader's longest wait for data: warn above.")
    reader_lag_invalid_ms: PositiveFloat | None = Field(None, description="... invalid above (off by default: one long pause merges a few tokens; a starved generator shows in cpu_wait).")
    send_lag_warn_ms: PositiveFloat = Field(10.0, description="Open loop: p99 of send time - intended time, warn above.")
    send_lag_invalid_ms: PositiveFloat = Field(100.0, description="... invalid above.")
    cpu_wait_warn: float = Field(0.1, ge=0, le=1, description="Share of the window the generator waited for a CPU: warn above.")
    cpu_wait_invalid: float = Field(0.3, ge=0, le=1, description="... invalid above.")
    cpu_busy_warn: float = Field(0.9, ge=0, le=1, description="Share of the window the generator ran on a CPU: warn above.")
    energy_disagree_warn: float = Field(0.05, ge=0, description="Counter vs power integral, relative: warn above.")
    min_power_refreshes: PositiveInt = Field(10, description="Warn when a window spans fewer power readings (invalid below one).")
    clock_drift_warn: float = Field(0.15, ge=0, description="SM clock range / median inside the window: warn above.")
    min_tail_requests: PositiveInt = Field(10, description="Requests beyond the SLO percentile (n x (1-q)): warn below.")
    steadiness_warn: float = Field(0.2, ge=0, description="|tokens/s 2nd half - 1st half| / mean: warn above.")
    steadiness_invalid: float | None = Field(None, ge=0, description="... invalid above (off by default: a ramp inside the window is flagged, not voided).")
    error_share_warn: float = Field(0.05, ge=0, le=1, description="Failed or partial requests: warn above.")
    error_share_invalid: float | None = Field(None, ge=0, le=1, description="... invalid above (off by default: errors are the server's, the SLO judges them).")
    idle_baseline_s: float = Field(1.0, ge=0, description="Idle power measured before each replica group's first cell (0: off).")


class InfluxDB(Strict):
    url: str
    api: Literal["v2", "v1"] = "v2"
    org: str | None = None
    bucket: str | None = None
    database: str | None = Field(None, description="InfluxQL database (v1 API, or the DBRP mapping on 2.x).")
    token_env: str = "INFLUXDB_TOKEN"
    token_file: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    spool_dir: str | None = None
    batch_size: PositiveInt = 5000
    flush_interval_s: PositiveFloat = 1.0


class Store(Strict):
    results_dir: str = "results"
    influxdb: InfluxDB | None = None


class Scenario(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    target: Target = Field(default_factory=Target)
    workload: Workload = Field(default_factory=Workload)
    load: Load = Field(default_factory=Load)
    slo: Slo = Field(default_factory=Slo)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    store: Store = Field(default_factory=Store)
    validity: Validity = Field(default_factory=Validity)
