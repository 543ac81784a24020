"""The replicas' own ``/metrics`` during a run, used defensively like GPU telemetry: one scraper
per replica group, rows into ``server_metrics.parquet`` (the run directory's journal keeps them
through a kill) and the store (measurement ``server_metric``; histograms' buckets only with
``store_buckets``); the counts, failures included,
into ``manifest.json: server_metrics``."""

from __future__ import annotations

import logging

from harness.engine.hooks import Hook

log = logging.getLogger(__name__)


class ServerMetrics(Hook):
    def __init__(self, scenario, rundir, writer=None):
        self.cfg = scenario.telemetry.server_metrics
        self.target = scenario.target
        self.rundir = rundir
        self.writer = writer          # the store's InfluxWriter, or None
        self.scraper = None
        self._rows = None

    def on_group_start(self, replicas: int, urls: list[str], telemetry_note: str) -> None:
        self.start(urls)

    def on_group_done(self, replicas: int) -> None:
        self.stop()

    def start(self, urls: list[str]) -> None:
        if not self.cfg.enabled or not urls or self.scraper is not None:
            return
        try:
            from harness.protocols.access import Access
            from harness.telemetry.server_metrics import Scraper, server_sample_schema

            try:
                access = Access.from_target(self.target)
            except Exception:  # noqa: BLE001 - the run checked its headers already
                access = None
            self._rows = self.rundir.appender("server_metrics", server_sample_schema())
            self.scraper = Scraper(list(urls), self._sink, rate_hz=self.cfg.rate_hz,
                                   timeout_s=self.cfg.timeout_s, access=access,
                                   full_every_s=self.cfg.full_every_s,
                                   run_id=self.rundir.run_id).start()
        except Exception as e:  # noqa: BLE001 - the load test goes on without server metrics
            log.warning("server metrics could not start: %s", e)
            self.scraper = None

    def _sink(self, rows) -> None:
        self._rows.extend(rows)
        if self.writer is not None:
            from harness.store.lineproto import server_metric

            if not self.cfg.store_buckets:
                rows = [r for r in rows if not r.name.endswith("_bucket")]
            try:
                self.writer.write_lines([x for x in map(server_metric, rows) if x is not None])
            except Exception as e:  # noqa: BLE001 - counted by the store's writer
                log.warning("store write failed: %s", e)

    def stop(self) -> None:
        """Stop the group's scraper; its counts are added to the manifest's."""
        sc, self.scraper = self.scraper, None
        if sc is None:
            return
        try:
            got = sc.stop()
            self._rows.flush()
            old = self.rundir.manifest.get("server_metrics") or {}
            merged = {"rate_hz": self.cfg.rate_hz}
            for k in ("scrapes", "samples", "failures", "last_error"):
                merged[k] = {**(old.get(k) or {}), **got[k]}
            self.rundir.write_manifest(server_metrics=merged)
        except Exception as e:  # noqa: BLE001
            log.warning("server metrics stop failed: %s", e)
