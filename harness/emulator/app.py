"""Routes of one emulated replica: TGI's API, the OpenAI routes, /metrics and /emulator/*.

Parsing and validation follow TGI's router: a stream's errors (overloaded, validation) arrive as
an SSE event after a 200, exactly as TGI sends them; non-streaming routes answer 422/429 with
``{"error", "error_type"}``.
"""

from __future__ import annotations

import itertools

import orjson

from harness.emulator import wire
from harness.emulator.engine import Seq
from harness.emulator.faults import FaultSpecError, parse_fault, status_error
from harness.emulator.http import Connection, Request
from harness.emulator.sinks import StreamSink, WholeSink
from harness.emulator.tokenizer import count_tokens

JSON = b"application/json"
SSE = b"text/event-stream"
_rids = itertools.count(1)


class BadRequest(Exception):
    def __init__(self, status: int, body: bytes, ctype: bytes = JSON):
        self.status, self.body, self.ctype = status, body, ctype


class Invalid(Exception):
    """A TGI validation error (422 ``validation``, or an SSE event on streams)."""


class ReplicaApp:
    def __init__(self, emulator, index: int):
        self.em = emulator
        self.index = index
        self.profile = emulator.profile
        self.engine = emulator.engines[index]
        self.metrics = emulator.metrics[index]
        self.gt = emulator.ground_truth[index]
        self.info = orjson.dumps(self._info())
        self.streams: set = set()     # open SSE streams, for keep-alive comments
        self.replica_fault = None     # a fault for every request to this replica (/emulator/fault)
        self.routes = {
            ("GET", "/health"): self._health,
            ("GET", "/info"): self._get_info,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._models,
            ("GET", "/emulator/gpu"): self._gpu,
            ("GET", "/emulator/ground_truth"): self._ground_truth,
            ("POST", "/emulator/ground_truth/reset"): self._ground_truth_reset,
            ("POST", "/emulator/fault"): self._set_fault,
            ("GET", "/emulator/state"): self._state,
            ("POST", "/generate"): self._generate,
            ("POST", "/generate_stream"): self._generate_stream,
            ("POST", "/"): self._compat,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/v1/chat/completions"): self._chat,
        }

    def _info(self) -> dict:
        lim = self.profile.limits
        return {"model_id": self.profile.model.id, "model_sha": None, "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": lim.max_concurrent_requests, "max_best_of": lim.max_best_of,
                "max_stop_sequences": lim.max_stop_sequences, "max_input_tokens": lim.max_input_tokens,
                "max_total_tokens": lim.max_total_tokens, "validation_workers": 2,
                "max_client_batch_size": lim.max_client_batch_size, "router": "text-generation-router",
                "version": wire.TGI_VERSION, "sha": None, "docker_label": None,
                "emulated": True, "emulator_profile": self.profile.name,
                **({} if self.em.budgets[self.index] is None else
                   {"max_batch_total_tokens": self.em.budgets[self.index]})}

    # -- dispatch -------------------------------------------------------------------------------
    def handle(self, req: Request, conn: Connection) -> None:
        fn = self.routes.get((req.method, req.path))
        if fn is None:
            known = {p for (_, p) in self.routes}
            conn.respond(405 if req.path in known else 404, b"", b"text/plain")
            return
        try:
            fn(req, conn)
        except BadRequest as e:
            conn.respond(e.status, e.body, e.ctype)

    def keep_alive(self, now_ns: int, every_ns: int) -> None:
        """TGI (axum ``KeepAlive::default``) sends ``:`` comments on streams silent for 15 s."""
        done = [s for s in self.streams if not s.keep_alive(now_ns, every_ns)]
        self.streams.difference_update(done)

    # -- plain routes ---------------------------------------------------------------------------
    def _health(self, req, conn):
        conn.respond(200, b"", b"text/plain")

    def _get_info(self, req, conn):
        conn.respond(200, self.info)

    def _metrics(self, req, conn):
        conn.respond(200, self.metrics.render().encode(), b"text/plain; version=0.0.4")

    def _models(self, req, conn):
        mid = self.profile.model.id
        conn.respond(200, orjson.dumps({"object": "list", "data": [
            {"id": mid, "object": "model", "created": 0, "owned_by": mid}]}))

    def _gpu(self, req, conn):
        conn.respond(200, orjson.dumps(self.em.gpu.snapshot(self.index)))

    def _ground_truth(self, req, conn):
        conn.respond(200, orjson.dumps(self.em.ground_truth_summary(self.index)))

    def _ground_truth_reset(self, req, conn):
        for g in self.em.ground_truth:
            g.reset()
        self.em.gc.reset()
        self.em.timer.reset_diagnosis()
        conn.respond(200, b'{"reset":true}')

    def _set_fault(self, req, conn):
        """``{"fault": SPEC}`` makes every later request to this replica fail so (a replica that
        answers 500 at once, resets, stalls); ``{"fault": null}`` heals it."""
        try:
            spec = orjson.loads(req.body or b"{}").get("fault")
            self.replica_fault = parse_fault(spec)
        except (orjson.JSONDecodeError, AttributeError, FaultSpecError) as e:
            conn.respond(400, wire.error_body(str(e), "emulator_fault"))
            return
        conn.respond(200, orjson.dumps({"replica": self.index, "fault": spec}))

    def _state(self, req, conn):
        conn.respond(200, orjson.dumps(self.em.state()))

    # -- generation -----------------------------------------------------------------------------
    @staticmethod
    def _json(req: Request) -> dict:
        ctype = req.headers.get("content-type", "")
        if "json" not in ctype:
            raise BadRequest(415, b"Expected request with `Content-Type: application/json`", b"text/plain")
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as e:
            raise BadRequest(400, f"Failed to parse the request body as JSON: {e}".encode(), b"text/plain")
        if not isinstance(body, dict):
            raise BadRequest(422, b"Failed to deserialize the JSON body into the target type: "
                                  b"invalid type, expected a map", b"text/plain")
        return body

    @staticmethod
    def _missing(field: str) -> BadRequest:
        return BadRequest(422, f"Failed to deserialize the JSON body into the target type: missing field "
                               f"`{field}`".encode(), b"text/plain")

    def _fault(self, req: Request, body: dict):
        spec = req.headers.get("x-emulator-fault") or body.pop("emulator_fault", None)
        if spec is None:
            return self.replica_fault
        try:
            return parse_fault(spec)
        except FaultSpecError as e:
            raise BadRequest(400, wire.error_body(str(e), "emulator_fault"))

    def _validate(self, input_tokens: int, max_new, params: dict) -> int:
        lim = self.profile.limits
        best_of = params.get("best_of")
        if best_of is not None and best_of != 1:
            if params.get("_stream"):
                raise Invalid("`best_of` != 1 is not supported when streaming tokens")
            if not 0 < best_of <= lim.max_best_of:
                raise Invalid(f"`best_of` must be > 0 and <= {lim.max_best_of}. Given: {best_of}")
            raise Invalid("the emulator does not serve `best_of` > 1")
        if params.get("_stream") and params.get("decoder_input_details"):
            raise Invalid("`decoder_input_details` == true is not supported when streaming tokens")
        t = params.get("temperature")
        if t is not None and t <= 0:
            raise Invalid("`temperature` must be strictly positive")
        p = params.get("top_p")
        if p is not None and p != 1.0 and not (0.0 < p < 1.0):
            raise Invalid("`top_p` must be > 0.0 and < 1.0")
        k = params.get("top_k")
        if k is not None and k <= 0:
            raise Invalid("`top_k` must be strictly positive")
        stop = params.get("stop") or []
        if len(stop) > lim.max_stop_sequences:
            raise Invalid(f"`stop` supports up to {lim.max_stop_sequences} stop sequences. Given: {len(stop)}")
        if input_tokens == 0:
            raise Invalid("`inputs` cannot be empty")
        if max_new is not None:
            if not isinstance(max_new, int) or isinstance(max_new, bool) or max_new < 0:
                raise BadRequest(422, b"Failed to deserialize the JSON body into the target type: "
                                      b"max_new_tokens: invalid value", b"text/plain")
            if max_new == 0:
                raise Invalid("`max_new_tokens` must be strictly positive")
        else:
            max_new = max(0, lim.max_total_tokens - input_tokens)
        if input_tokens + max_new > lim.max_total_tokens:
            raise Invalid(f"`inputs` tokens + `max_new_tokens` must be <= {lim.max_total_tokens}. "
                          f"Given: {input_tokens} `inputs` tokens and {max_new} `max_new_tokens`")
        if input_tokens > lim.max_input_tokens:
            raise Invalid(f"`inputs` must have less than {lim.max_input_tokens} tokens. Given: {input_tokens}")
        return max_new

    def _run(self, req: Request, conn: Connection, *, stream: bool, fault, input_tokens: int, max_new,
             params: dict, enc_factory, whole_factory) -> None:
        """Admission, validation and submission shared by every generating route."""
        gt, metrics = self.gt, self.metrics
        gt.arrived(req.received_ns)
        sent = req.headers.get("x-sent-ns")
        if sent is not None:      # a client on this host stamped its send (groundtruth.py)
            try:
                gt.request_delay_us.record((req.received_ns - int(sent)) // 1000)
            except ValueError:
                pass
        metrics.request()
        extra = [(b"x-compute-type", b"gpu+optimized"), (b"x-compute-characters", b"%d" % len(req.body)),
                 (b"x-emulator-replica", b"%d" % self.index)]
        if fault is not None and fault.kind == "status":
            gt.requests_faulted += 1
            msg, etype = status_error(fault.code)
            conn.respond(fault.code, wire.error_body(msg, etype), JSON, extra)
            return
        if fault is not None and fault.kind == "hang":
            gt.requests_faulted += 1
            return
        rid = next(_rids)
        error = None
        if self.engine.active() >= self.profile.limits.max_concurrent_requests:
            metrics.failure("overloaded")
            error = (429, "Model is overloaded", "overloaded")
        else:
            try:
                max_new = self._validate(input_tokens, max_new, params)
                metrics.validated(input_tokens, max_new)
            except Invalid as e:
                metrics.failure("validation")
                error = (422, f"Input validation error: {e}", "validation")
        if error is not None:
            gt.requests_rejected += 1
            status, msg, etype = error
            if stream:
                enc = enc_factory(rid, input_tokens)
                extra.append((b"cache-control", b"no-cache"))
                extra.append((b"x-accel-buffering", b"no"))
                conn.start_stream(200, SSE, extra)
                conn.end_stream(enc.error(msg, etype) + enc.error_tail)
            else:
                conn.respond(status, wire.error_body(msg, etype), JSON, extra)
            return
        if stream:
            sink = StreamSink(conn, enc_factory(rid, input_tokens), gt, fault, self.em.timer)
            self.streams.add(sink)
            extra.append((b"cache-control", b"no-cache"))
            extra.append((b"x-accel-buffering", b"no"))
            conn.start_stream(200, SSE, extra)
        else:
            sink = WholeSink(conn, lambda n: whole_factory(rid, n, input_tokens), gt, fault, extra)
        seq = Seq(rid, input_tokens, max_new, sink, req.received_ns)

        def lost():
            if not seq.finished and not seq.cancelled:
                gt.requests_cancelled += 1
                self.engine.cancel(seq)
        conn.on_lost = lost
        self.engine.submit(seq, self.em.timer.now_ns())

    # TGI routes
    def _tgi(self, req: Request, conn: Connection, stream: bool | None) -> None:
        body = self._json(req)
        fault = self._fault(req, body)
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            raise self._missing("inputs")
        params = body.get("parameters") or {}
        if stream is None:
            stream = bool(body.get("stream", False))
        compat = req.path == "/"
        details = bool(params.get("details", False))
        seed = params.get("seed")
        prompt = inputs if params.get("return_full_text") else None
        n_in = count_tokens(inputs)
        params = dict(params, _stream=stream)
        self._run(req, conn, stream=stream, fault=fault, input_tokens=n_in,
                  max_new=params.get("max_new_tokens"), params=params,
                  enc_factory=lambda rid, n_in: wire.TgiStream(rid, n_in, details, seed, prompt),
                  whole_factory=(lambda rid, n, n_in: [wire.tgi_generate(rid, n, details, seed, prompt)])
                  if compat else (lambda rid, n, n_in: wire.tgi_generate(rid, n, details, seed, prompt)))

    def _generate(self, req, conn):
        self._tgi(req, conn, False)

    def _generate_stream(self, req, conn):
        self._tgi(req, conn, True)

    def _compat(self, req, conn):
        self._tgi(req, conn, None)

    # OpenAI routes
    def _completions(self, req: Request, conn: Connection) -> None:
        body = self._json(req)
        fault = self._fault(req, body)
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise BadRequest(422, wire.error_body(
                    "the emulator serves one prompt per request", "batch size exceeded"))
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise self._missing("prompt")
        if body.get("suffix") is not None:
            raise BadRequest(422, wire.error_body(
                "Suffix is not supported and can be achieved by preprocessing the prompt.",
                "suffix not supported"))
        model = self.profile.model.id
        params = self._openai_params(body)
        self._run(req, conn, stream=bool(body.get("stream", False)), fault=fault,
                  input_tokens=count_tokens(prompt), max_new=body.get("max_tokens"), params=params,
                  enc_factory=lambda rid, n_in: wire.CompletionStream(rid, n_in, model, self.em.sse_space),
                  whole_factory=lambda rid, n, n_in: wire.completion(rid, n, n_in, model))

    def _chat(self, req: Request, conn: Connection) -> None:
        body = self._json(req)
        fault = self._fault(req, body)
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise self._missing("messages")
        tk = self.profile.tokenizer
        n_in = tk.chat_tokens_generation_prompt
        for m in messages:
            if not isinstance(m, dict) or "role" not in m:
                raise BadRequest(422, b"Failed to deserialize the JSON body into the target type: "
                                      b"messages: missing field `role`", b"text/plain")
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            n_in += tk.chat_tokens_per_message + count_tokens(content or "")
        model = body.get("model")
        if model in (None, "tgi"):
            model = self.profile.model.id
        include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
        max_new = body.get("max_tokens", body.get("max_completion_tokens"))
        params = self._openai_params(body)
        self._run(req, conn, stream=bool(body.get("stream", False)), fault=fault, input_tokens=n_in,
                  max_new=max_new, params=params,
                  enc_factory=lambda rid, n_in: wire.ChatStream(rid, n_in, model, include_usage, self.em.sse_space),
                  whole_factory=lambda rid, n, n_in: wire.chat_completion(rid, n, n_in, model))

    @staticmethod
    def _openai_params(body: dict) -> dict:
        t = body.get("temperature")
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        return {"temperature": None if t == 0 else t, "top_p": body.get("top_p"), "stop": stop or []}
