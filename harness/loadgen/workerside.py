"""Worker-side wiring: receive the plan, forward deltas to the master through Locust messages.

Used by ``harness.loadgen.worker`` (worker processes of ``run_cell(processes=N)``) and by the
locustfiles under plain ``locust --worker``. Messages (all msgpack dicts):

* master -> worker ``slm_plan``: :class:`PlanMessage`; the worker builds its :class:`LoadContext`;
* worker -> master, inside every Locust stats report (``report_to_master``): key ``slm``, the
  collector's delta (histograms, counts, records);
* worker -> master ``slm_drained``: the plan is over and no request of this worker is in flight;
* master -> worker ``slm_flush``, answered by worker -> master ``slm_final``: the last delta
  (also sent unasked when the worker's users stop).
"""

from __future__ import annotations

import logging

import gevent

from harness.loadgen.context import LoadContext, PlanMessage

log = logging.getLogger(__name__)


def setup_worker(env) -> None:
    runner = env.runner
    state = {"drained_sent": False}

    def on_plan(environment, msg, **kw):
        old = getattr(environment, "slm", None)
        if old is not None:
            old.stopped = True
            old.client.close()
        index = getattr(runner, "worker_index", 0) or 0
        environment.slm = LoadContext.build(PlanMessage.from_wire(msg.data), events=environment.events,
                                            forward=True, stream_index=index)
        state["drained_sent"] = False

    runner.register_message("slm_plan", on_plan)

    def on_flush(environment, msg, **kw):
        ctx = getattr(environment, "slm", None)
        payload = ctx.collector.export() if ctx is not None else {}
        runner.send_message("slm_final", payload)

    runner.register_message("slm_flush", on_flush)

    def on_report(client_id, data, **kw):
        ctx = getattr(env, "slm", None)
        if ctx is not None:
            data["slm"] = ctx.collector.export()

    env.events.report_to_master.add_listener(on_report)

    def on_stop(environment, **kw):
        ctx = getattr(environment, "slm", None)
        if ctx is not None:
            ctx.stopped = True
            runner.send_message("slm_final", ctx.collector.export())

    env.events.test_stop.add_listener(on_stop)

    def watch_drain():
        while True:
            gevent.sleep(0.05)
            ctx = getattr(env, "slm", None)
            if ctx is None or state["drained_sent"]:
                continue
            if ctx.ended() and ctx.collector.inflight == 0:
                state["drained_sent"] = True
                runner.send_message("slm_drained", {"worker": ctx.collector.worker})

    runner.greenlet.spawn(watch_drain)
