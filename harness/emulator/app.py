"""Routes of one emulated replica: TGI's API, the OpenAI routes, /metrics and /emulator/*.

Parsing and validation follow TGI's router: a body is read as TGI's serde types
(:mod:`harness.emulator.schema`, 4xx with axum's text on a wrong type), then validated in TGI's
order (:mod:`harness.emulator.validation`); a stream's errors (overloaded, validation) arrive as an
SSE event after a 200, exactly as TGI sends them; non-streaming routes answer 422/429 with
``{"error", "error_type"}``. Every request to a generating route is counted once in the ground
truth (received = completed + rejected + cancelled) and in ``/metrics``, whatever its fate; no
bad request drops its connection.
"""

from __future__ import annotations

import itertools
import logging

import orjson

from harness.emulator import arrivallog, prefixcache, schema, wire
from harness.emulator.engine import Seq
from harness.emulator.faults import FaultSpecError, parse_fault, status_error
from harness.emulator.http import Connection, Request
from harness.emulator.openapi import openapi_document
from harness.emulator.personality import TGI, Personality
from harness.emulator.sinks import Group, StreamSink, WholeSink
from harness.emulator.tokenizer import chat_template, simple_tokens
from harness.emulator.validation import Invalid, Valid, validate

log = logging.getLogger(__name__)
JSON = b"application/json"
SSE = b"text/event-stream"
TEXT = b"text/plain; charset=utf-8"
_rids = itertools.count(1)
#: routes whose requests the ground truth and tgi_request_count count
GENERATING = frozenset({"/", "/generate", "/generate_stream", "/v1/completions", "/v1/chat/completions",
                        "/invocations", "/tokenize", "/chat_tokenize"})


class BadRequest(Exception):
    def __init__(self, status: int, body: bytes, ctype: bytes = JSON):
        self.status, self.body, self.ctype = status, body, ctype


class ReplicaApp:
    def __init__(self, emulator, index: int):
        self.em = emulator
        self.index = index
        self.profile = emulator.profile
        self.persona: Personality = getattr(emulator, "personality", TGI)
        self.prefix = self.persona.prefix
        self.engine = emulator.engines[index]
        self.metrics = emulator.metrics[index]
        self.gt = emulator.ground_truth[index]
        self.info = orjson.dumps(self._info())
        self.streams: set = set()     # open SSE streams, for keep-alive comments
        self.replica_fault = None     # a fault for every request to this replica (/emulator/fault)
        routes = {
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._models,
            ("GET", "/emulator/gpu"): self._gpu,
            ("GET", "/emulator/ground_truth"): self._ground_truth,
            ("GET", "/emulator/arrivals"): lambda req, conn: conn.respond(200, orjson.dumps(arrivallog.snapshot(self.gt))),
            ("POST", "/emulator/ground_truth/reset"): self._ground_truth_reset,
            ("POST", "/emulator/fault"): self._set_fault,
            ("GET", "/emulator/state"): self._state,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/v1/chat/completions"): self._chat,
        }
        if self.persona.tgi_routes:
            routes.update({
                ("GET", "/"): self._health,
                ("GET", "/ping"): self._health,
                ("GET", "/info"): self._get_info,
                ("GET", "/api-doc/openapi.json"): self._openapi,
                ("POST", "/generate"): self._generate,
                ("POST", "/generate_stream"): self._generate_stream,
                ("POST", "/"): self._compat,
                ("POST", "/invocations"): self._invocations,
                ("POST", "/tokenize"): self._tokenize,
                ("POST", "/chat_tokenize"): self._chat_tokenize,
            })
        else:
            routes[("GET", "/ping")] = self._health
            routes[("GET", "/version")] = self._version
        if self.persona.metrics == "none":
            del routes[("GET", "/metrics")]
        self.routes = routes

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
            conn.respond(405 if req.path in known else 404, b"", TEXT)
            return
        counted = req.method == "POST" and req.path in GENERATING
        if counted:
            self.gt.arrived(req.received_ns)
            self.metrics.request()
            sent = req.headers.get("x-sent-ns")
            if sent is not None:      # a client on this host stamped its send (groundtruth.py)
                try:
                    self.gt.request_delay_us.record((req.received_ns - int(sent)) // 1000)
                except ValueError:
                    pass
        try:
            fn(req, conn)
        except BadRequest as e:
            if counted:
                self._rejected("validation")
            conn.respond(e.status, e.body, e.ctype)
        except Exception:   # an emulator bug must cost one 500, never the connection
            log.exception("emulator: %s %s failed", req.method, req.path)
            if conn.head_sent:
                conn.close()
                return
            if counted:
                self._rejected("emulator")
            conn.respond(500, wire.error_body("the emulator failed on this request", "emulator"))

    def _rejected(self, err: str) -> None:
        self.gt.requests_rejected += 1
        self.metrics.failure(err)

    def keep_alive(self, now_ns: int, every_ns: int) -> None:
        """TGI (axum ``KeepAlive::default``) sends an empty comment on streams silent for 15 s;
        vLLM and OpenAI send none."""
        comment = self.persona.keep_alive
        if comment is None:
            self.streams = {s for s in self.streams if not (s.dead or s.conn.closed)}
            return
        done = [s for s in self.streams if not s.keep_alive(now_ns, every_ns, comment)]
        self.streams.difference_update(done)

    # -- plain routes ---------------------------------------------------------------------------
    def _health(self, req, conn):
        conn.respond(200, b"", TEXT)

    def _get_info(self, req, conn):
        conn.respond(200, self.info)

    def _version(self, req, conn):
        conn.respond(200, orjson.dumps({"version": self.persona.version}))

    def _openapi(self, req, conn):
        conn.respond(200, orjson.dumps(openapi_document(wire.TGI_VERSION)))

    def _metrics(self, req, conn):
        conn.respond(200, self.metrics.render(self.persona.metrics).encode(), b"text/plain; version=0.0.4")

    def _models(self, req, conn):
        conn.respond(200, orjson.dumps(self.persona.models(self.profile)))

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

    # -- reading bodies -------------------------------------------------------------------------
    @staticmethod
    def _json(req: Request):
        """axum's ``Json`` extractor: 415 without a JSON content type, 400 on a syntax error."""
        ctype = req.headers.get("content-type", "")
        mime = ctype.split(";")[0].strip().lower()
        if not (mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))):
            raise BadRequest(415, b"Expected request with `Content-Type: application/json`", TEXT)
        try:
            return orjson.loads(req.body)
        except orjson.JSONDecodeError as e:
            raise BadRequest(400, f"Failed to parse the request body as JSON: {e}".encode(), TEXT) from None

    def _read(self, kind: schema.Struct, body):
        try:
            return kind(body, "")
        except schema.DeserializeError as e:
            raise BadRequest(self.persona.error_status(422), self.persona.deserialize_error(e),
                             self.persona.deserialize_ctype) from None

    def _fault(self, req: Request, body):
        spec = req.headers.get("x-emulator-fault")
        if spec is None and isinstance(body, dict):
            spec = body.pop("emulator_fault", None)
        if spec is None:
            return self.replica_fault
        try:
            return parse_fault(spec)
        except FaultSpecError as e:
            raise BadRequest(400, wire.error_body(str(e), "emulator_fault")) from None

    # -- generation -----------------------------------------------------------------------------
    def _error(self, conn: Connection, stream: bool, status: int, msg: str, etype: str, enc) -> None:
        if stream:
            conn.start_stream(200, SSE, [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")])
            conn.end_stream(enc.error(msg, etype) + enc.error_tail)
        else:
            conn.respond(self.persona.error_status(status), self.persona.error_body(status, msg, etype), JSON)

    def _run(self, req: Request, conn: Connection, *, stream: bool, fault, jobs: list, encoders) -> None:
        """Admission, validation and submission shared by every generating route.

        ``jobs``: one (inputs, parameters) per sequence the request asks for (several prompts of a
        completion); ``encoders(rids, valids)`` -> (stream encoder factory, whole-body builder)."""
        gt, metrics = self.gt, self.metrics
        chars = sum(len(inputs) for inputs, _ in jobs)
        extra = [(b"x-compute-type", b"gpu+optimized"), (b"x-compute-characters", b"%d" % chars),
                 (b"x-emulator-replica", b"%d" % self.index)]
        if fault is not None and fault.kind == "status":
            gt.requests_faulted += 1
            msg, etype = status_error(fault.code)
            conn.respond(fault.code, wire.error_body(msg, etype), JSON, extra)
            return
        if fault is not None and fault.kind == "hang":
            gt.requests_faulted += 1
            return
        rids = [next(_rids) for _ in jobs]
        error = None
        valids: list[Valid] = []
        if self.engine.active() + len(jobs) > self.profile.limits.max_concurrent_requests:
            error = (429, "Model is overloaded", "overloaded")
        else:
            try:
                for inputs, params in jobs:
                    valids.append(validate(inputs, params, self.profile.limits, stream=stream))
            except Invalid as e:
                error = (422, f"Input validation error: {e}" if self.persona.name == "tgi" else str(e), "validation")
        make_stream, make_whole = encoders(rids, valids)
        if error is not None:
            status, msg, etype = error
            self._rejected(etype)
            self._error(conn, stream, status, msg, etype, make_stream(0) if stream else None)
            return
        for rid, v in zip(rids, valids):
            v.resolve_stop(rid)
            metrics.validated(v.input_tokens, v.chunk_new)
        group = Group(len(jobs)) if len(jobs) > 1 else None
        seqs: list[Seq] = []
        if stream:
            extra.append((b"cache-control", b"no-cache"))
            extra.append((b"x-accel-buffering", b"no"))
            conn.start_stream(200, SSE, extra)
            for i, (rid, v) in enumerate(zip(rids, valids)):
                sink = StreamSink(conn, make_stream(i), gt, fault, self.em.timer, group)
                self.streams.add(sink)
                seqs.append(Seq(rid, v.input_tokens, v.max_new, sink, req.received_ns))
        else:
            group = group or Group(1)
            for i, (rid, v) in enumerate(zip(rids, valids)):
                sink = WholeSink(conn, make_whole, gt, fault, extra, group, i)
                seqs.append(Seq(rid, v.input_tokens, v.max_new, sink, req.received_ns))
            group.seqs = seqs

        def lost():
            if any(not s.finished and not s.cancelled for s in seqs):
                gt.requests_cancelled += 1
                for s in seqs:
                    if not s.finished and not s.cancelled:
                        self.engine.cancel(s)
        conn.on_lost = lost
        prefixcache.apply(gt, [v.inputs for v in valids], seqs)
        arrivallog.record(gt, seqs)
        now = self.em.timer.now_ns()
        for s in seqs:
            self.engine.submit(s, now)

    # TGI routes
    def _tgi(self, req: Request, conn: Connection, stream: bool | None, body=None) -> None:
        if body is None:
            body = self._json(req)
        fault = self._fault(req, body)
        compat = stream is None
        r = self._read(schema.COMPAT_GENERATE_REQUEST if compat else schema.GENERATE_REQUEST, body)
        p = r["parameters"]
        if compat:
            stream = r["stream"]
            if p["return_full_text"] is None:     # the model's pipeline tag is text-generation
                p["return_full_text"] = True
        inputs = r["inputs"]

        def encoders(rids, valids):
            def make_stream(i):
                if not valids:
                    return wire.TgiStream(0, 0, False, None, None, prefix=self.prefix)
                v = valids[i]
                return wire.TgiStream(rids[i], v.input_tokens, v.details, v.seed, v.prompt, prefix=self.prefix,
                                      finish=v.finish, top_n=v.top_n)

            def make_whole(i, n):
                v, rid = valids[i], rids[i]
                prefill = wire.prefill_tokens(v.inputs, v.input_tokens) if v.decoder_input_details else []
                best = None
                if v.best_of > 1:
                    best = [wire.best_of_sequence(rid * 1000 + j, n, v.seed, v.prompt, v.finish, prefill)
                            for j in range(1, v.best_of)]
                body = wire.tgi_generate(rid, n, v.details, v.seed, v.prompt, finish=v.finish, prefill=prefill,
                                         top_n=v.top_n, best_of=best)
                return [body] if compat else body
            return make_stream, lambda parts: make_whole(0, parts[0][1])
        self._run(req, conn, stream=stream, fault=fault, jobs=[(inputs, p)], encoders=encoders)

    def _generate(self, req, conn):
        self._tgi(req, conn, False)

    def _generate_stream(self, req, conn):
        self._tgi(req, conn, True)

    def _compat(self, req, conn):
        self._tgi(req, conn, None)

    def _invocations(self, req, conn):
        """SageMaker's route: TGI's untagged ``SagemakerRequest`` (generate, chat or completion)."""
        body = self._json(req)
        for kind, route in ((schema.COMPAT_GENERATE_REQUEST, self._compat_body),
                            (schema.CHAT_REQUEST, self._chat_body), (schema.COMPLETION_REQUEST, self._completions_body)):
            try:
                kind(body if not isinstance(body, dict) else {k: v for k, v in body.items() if k != "emulator_fault"})
            except schema.DeserializeError:
                continue
            route(req, conn, body)
            return
        raise BadRequest(self.persona.error_status(422), self.persona.deserialize_error(schema.DeserializeError(
            "data did not match any variant of untagged enum SagemakerRequest")), self.persona.deserialize_ctype)

    def _compat_body(self, req, conn, body):
        self._tgi(req, conn, None, body)

    def _tokenize(self, req, conn):
        r = self._read(schema.GENERATE_REQUEST, self._json(req))
        self.gt.requests_completed += 1
        conn.respond(200, orjson.dumps(simple_tokens(r["inputs"])))

    def _chat_tokenize(self, req, conn):
        r = self._read(schema.CHAT_REQUEST, self._json(req))
        text = chat_template(r["messages"], self.profile.tokenizer)
        self.gt.requests_completed += 1
        conn.respond(200, orjson.dumps({"tokenize_response": simple_tokens(text), "templated_text": text}))

    # OpenAI routes
    def _unprocessable(self, message: str, error_type: str) -> BadRequest:
        return BadRequest(self.persona.error_status(422), self.persona.error_body(422, message, error_type))

    def _check_openai(self, r: dict) -> None:
        try:
            self.persona.check_openai(r, self.profile.limits)
        except Invalid as e:
            raise self._unprocessable(str(e), "validation") from None
        if self.persona.name != "tgi" and r.get("top_p") == 1.0:
            r["top_p"] = None        # TGI's own range excludes 1.0; vLLM's and OpenAI's include it

    @staticmethod
    def _sampling(temperature) -> tuple[bool, float | None]:
        """``temperature: 0`` means greedy on TGI's OpenAI routes."""
        return (False, None) if temperature == 0.0 else (True, temperature)

    def _completions(self, req: Request, conn: Connection) -> None:
        self._completions_body(req, conn, self._json(req))

    def _completions_body(self, req: Request, conn: Connection, body) -> None:
        fault = self._fault(req, body)
        r = self._read(schema.COMPLETION_REQUEST, body)
        if r["suffix"] is not None:
            raise self._unprocessable("Suffix is not supported and can be achieved by preprocessing the prompt.",
                                      "suffix not supported")
        self._check_openai(r)
        prompts = r["prompt"]
        lim = self.profile.limits
        if len(prompts) > lim.max_client_batch_size:
            raise self._unprocessable(
                f"Number of prompts exceeds the maximum allowed batch size of {lim.max_client_batch_size}",
                "batch size exceeded")
        stream = r["stream"]
        do_sample, temperature = self._sampling(r["temperature"])
        params = dict(schema.GENERATE_PARAMETERS({}, ""), temperature=temperature, do_sample=do_sample,
                      repetition_penalty=r["repetition_penalty"], frequency_penalty=r["frequency_penalty"],
                      top_p=r["top_p"], max_new_tokens=r["max_tokens"], stop=r["stop"] or [], details=True,
                      decoder_input_details=not stream, seed=r["seed"])
        model = self.profile.model.id
        n = len(prompts)

        def encoders(rids, valids):
            def make_stream(i):
                if not valids:
                    return wire.CompletionStream(0, 0, model, prefix=self.prefix)
                return self.persona.completion_stream(rids[i], valids[i].input_tokens, model, self.prefix,
                                                      valids[i].finish, i, n)

            def make_whole(parts):
                return wire.completions_body([(rids[i], k, valids[i].input_tokens, valids[i].finish)
                                              for i, k in parts], model)
            return make_stream, make_whole
        self._run(req, conn, stream=stream, fault=fault, jobs=[(pr, dict(params)) for pr in prompts],
                  encoders=encoders)

    def _chat(self, req: Request, conn: Connection) -> None:
        self._chat_body(req, conn, self._json(req))

    def _chat_body(self, req: Request, conn: Connection, body) -> None:
        fault = self._fault(req, body)
        r = self._read(schema.CHAT_REQUEST, body)
        self._check_openai(r)
        text = chat_template(r["messages"], self.profile.tokenizer)
        model = r["model"]
        if model in (None, "tgi"):
            model = self.profile.model.id
        include_usage = r["stream_options"]["include_usage"]
        do_sample, temperature = self._sampling(r["temperature"])
        pp = r["presence_penalty"]
        logprobs = bool(r["logprobs"])
        top = r["top_logprobs"]
        params = dict(schema.GENERATE_PARAMETERS({}, ""), temperature=temperature, do_sample=do_sample,
                      repetition_penalty=None if pp is None or self.persona.name != "tgi" else pp + 2.0, frequency_penalty=r["frequency_penalty"],
                      top_p=r["top_p"], max_new_tokens=r["max_tokens"], stop=r["stop"] or [], details=True,
                      seed=r["seed"], top_n_tokens=top, grammar=r["response_format"])
        stream = r["stream"]

        def encoders(rids, valids):
            def make_stream(i):
                if not valids:
                    return wire.ChatStream(0, 0, model, False, prefix=self.prefix)
                v = valids[0]
                return self.persona.chat_stream(rids[0], v.input_tokens, model, include_usage, self.prefix, v.finish,
                                                logprobs, top or 0)

            def make_whole(parts):
                v = valids[0]
                return wire.chat_completion(rids[0], parts[0][1], v.input_tokens, model, finish=v.finish,
                                            logprobs=logprobs, top_logprobs=top or 0)
            return make_stream, make_whole
        self._run(req, conn, stream=stream, fault=fault, jobs=[(text, params)], encoders=encoders)
