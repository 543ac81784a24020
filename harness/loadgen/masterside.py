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

    def flush(self, workers: int, timeout_s: float = 15.0) -> bool:
        """Ask every worker for its last delta and wait for all of them (True if all came)."""
        import time

        import gevent

        self.finals.clear()
        self.env.runner.send_message("slm_flush", {})
        deadline = time.monotonic() + timeout_s
        while len(self.finals) < workers and time.monotonic() < deadline:
            gevent.sleep(0.02)
        return len(self.finals) >= workers
