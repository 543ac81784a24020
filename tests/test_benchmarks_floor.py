"""The emulator's floor (benchmarks/bare_emitter.c, ``emulator_throughput.py --floor``): it must
serve what the emulator serves, or the floor rows compare unlike work. Built with the machine's
cc, driven over loopback by TGI's own client, its window counts checked."""

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from emulator_throughput import build_floor  # noqa: E402
from host import wait_file  # noqa: E402


def test_floor_streams_tgi_events_on_schedule_and_counts_its_window(tmp_path):
    from text_generation import Client

    exe = build_floor(tmp_path)
    now = time.monotonic()
    t0, t1 = now + 0.5, now + 3.0
    out = tmp_path / "floor.json"
    proc = subprocess.Popen([str(exe), str(tmp_path / "port.json"), "20000", "5000", "4", "100",
                             str(int(t0 * 1e9)), str(int(t1 * 1e9)), str(out)])
    try:
        port = json.loads(wait_file(tmp_path / "port.json", proc))["port"]
        client = Client(f"http://127.0.0.1:{port}", timeout=10)
        time.sleep(max(0.0, t0 - time.monotonic()))
        for _ in range(3):                       # keep-alive: one connection, requests back to back
            s = time.monotonic()
            events = list(client.generate_stream("a prompt", max_new_tokens=4))
            took = time.monotonic() - s
            assert [e.token.id for e in events] == [1000, 1001, 1002, 1003]
            assert events[-1].generated_text == "the generated text" and events[0].generated_text is None
            assert 0.035 <= took < 1.0, took     # TTFT 20 ms + 3 ITL of 5 ms, never early
        f = json.loads(wait_file(out, proc, timeout=10))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert f["requests"] == 3 and f["tokens_sent"] == 12 and f["send_errors"] == 0, f
    assert 0 <= f["lateness_us"]["p50"] <= f["lateness_us"]["p99"] <= f["lateness_us"]["max"] < 1_000_000, f
