"""Master-side wiring: merge every worker's deltas into one collector that owns the run dir."""

from __future__ import annotations

from harness.loadgen.collector import Collector


class MasterSide:
    """Absorbs ``slm`` deltas from stats reports and ``slm_final``; tracks drained workers."""

    def __init__(self, env, collector: Collector):
        self.env = env
        self.collector = collector
        self.drained: set[str] = set()
        self.finals: set[str] = set()
        self.inflight: dict[str, int] = {}
        runner = env.runner

        def on_worker_report(client_id, data, **kw):
            d = data.get("slm")
            if d:
                self.collector.absorb(d)
                self.inflight[client_id] = d.get("inflight", 0)

        env.events.worker_report.add_listener(on_worker_report)

        def on_final(environment, msg, **kw):
            self.collector.absorb(msg.data)
            self.finals.add(msg.node_id)

        def on_drained(environment, msg, **kw):
            self.drained.add(msg.node_id)

        runner.register_message("slm_final", on_final)
        runner.register_message("slm_drained", on_drained)

    def reset(self) -> None:
        self.drained.clear()
        self.finals.clear()
