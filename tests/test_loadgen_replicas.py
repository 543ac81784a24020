"""Client-side replica choice."""

import time

from harness.loadgen.replicas import ReplicaPicker


def test_least_outstanding_and_round_robin_ties():
    p = ReplicaPicker(["http://a", "http://b", "http://c"])
    got = [p.acquire() for _ in range(3)]
    assert sorted(got) == ["http://a", "http://b", "http://c"]
    p.release("http://b")
    assert p.acquire() == "http://b"          # the only one with fewer outstanding
    rr = ReplicaPicker(["http://a", "http://b"], "round-robin")
    assert [rr.acquire() for _ in range(4)] == ["http://a", "http://b"] * 2


def test_a_refusing_replica_is_skipped_for_a_while():
    p = ReplicaPicker(["http://a", "http://dead"], down_s=0.2)
    p.mark_down("http://dead")
    picks = []
    for _ in range(6):
        u = p.acquire()
        picks.append(u)
        p.release(u)
    assert set(picks) == {"http://a"}
    time.sleep(0.25)
    picks = {p.acquire() for _ in range(2)}
    assert "http://dead" in picks
    solo = ReplicaPicker(["http://dead"], down_s=5)
    solo.mark_down("http://dead")
    assert solo.acquire() == "http://dead"   # nothing else to choose: keep trying (and recording)
