"""The emulated power source against a real emulator (child process, real HTTP): labelled
"emulated", energy from its modeled counter, failover between replicas, gaps and resumption."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from harness.telemetry import Sampler, Sink, open_source
from harness.telemetry.emulated import EmulatedSource
from tests.support.emulator import emulator, post
from tests.support.ports import dead_url
from tests.support.processes import wait_for


class Keep(Sink):
    def __init__(self):
        self.got, self.gaps = [], []

    def samples(self, batch):
        self.got += batch

    def gap(self, gap):
        self.gaps.append(gap)


def test_auto_without_nvml_uses_the_emulators_modeled_power_labelled(caplog):
    caplog.set_level(logging.WARNING)
    with emulator(2) as reps:
        sel = open_source("auto", emulator_urls=reps.urls)
        assert sel.kind == "emulated" and "no NVML" in sel.note and "emulated" in sel.note
        keep = Keep()
        s = Sampler(sel.source, [keep], rate_hz=20, run_id="emu")
        s.start()
        s.begin_window("busy")
        stop = threading.Event()

        def load():
            while not stop.is_set():
                post(reps.urls[0] + "/generate",
                     {"inputs": "a b c d", "parameters": {"max_new_tokens": 40}})

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(2.0)
        stop.set()
        for w in workers:
            w.join()
        win = s.end_window("busy")
        s.stop()
        sel.source.close()
    assert keep.got and {x.source for x in keep.got} == {"emulated"}
    assert all(x.run_id == "emu" and x.power_w is not None for x in keep.got)
    assert max(x.power_w for x in keep.got) > min(x.power_w for x in keep.got)   # load showed
    assert win.source == "emulated-counter" and win.energy_j > 0
    assert win.integral_j == pytest.approx(win.energy_j, rel=0.25)
    assert not [r for r in caplog.records if r.name.startswith("harness.telemetry")]


def test_failover_gap_and_resume_across_replica_urls():
    with emulator(1) as reps:
        live = reps.urls[0]
        src = EmulatedSource([dead_url(), live])          # the first replica is gone: next one
        assert src.read(0).source == "emulated"
        keep = Keep()
        s = Sampler(src, [keep], rate_hz=20)
        s.start()
        # each step waits for what the sampler has counted, not for a sleep a loaded machine
        # may stretch past the sampler's ticks
        wait_for(lambda: s.counts["samples"] >= 5, 30, "samples from the live replica", 0.05)
        src.set_urls([dead_url()])                        # the cell's replicas went away
        wait_for(lambda: s.counts["read_errors"] >= 3, 30, "failed reads", 0.05)
        src.set_urls([live])                              # the next cell's replicas are up
        resumed = s.counts["samples"]
        wait_for(lambda: s.counts["gaps"] == 1 and s.counts["samples"] >= resumed + 3, 30,
                 "the gap closed and sampling resumed", 0.05)
        summary = s.stop()
        src.close()
    assert len(keep.gaps) == 1 and keep.gaps[0].errors >= 3
    assert "no emulator replica answered" in keep.gaps[0].error
    assert any(x.ts_ns > keep.gaps[0].end_ns for x in keep.got)
    assert summary["counts"]["gaps"] == 1


def test_emulated_source_with_no_replica_answering_is_unavailable():
    sel = open_source("emulated", emulator_urls=[dead_url()], warn=False)
    assert sel.source is None and "emulator GPU endpoint not reachable" in sel.note
