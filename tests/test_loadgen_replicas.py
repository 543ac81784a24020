"""Client-side replica choice."""

from types import SimpleNamespace

from harness.loadgen import replicas
from harness.loadgen.replicas import ReplicaPicker


def test_least_outstanding_and_round_robin_ties():
    p = ReplicaPicker(["http://a", "http://b", "http://c"])
    got = [p.acquire() for _ in range(3)]
    assert sorted(got) == ["http://a", "http://b", "http://c"]
    p.release("http://b")
    assert p.acquire() == "http://b"          # the only one with fewer outstanding
    rr = ReplicaPicker(["http://a", "http://b"], "round-robin")
    assert [rr.acquire() for _ in range(4)] == ["http://a", "http://b"] * 2


def test_a_refusing_replica_is_skipped_for_a_while(monkeypatch):
    # the picker's clock, moved by hand: a loaded machine's stall between mark_down and the
    # picks cannot end the 0.2 s pause early
    now = [100.0]
    monkeypatch.setattr(replicas, "time", SimpleNamespace(monotonic=lambda: now[0]))
    p = ReplicaPicker(["http://a", "http://dead"], down_s=0.2)
    p.mark_down("http://dead")
    picks = []
    for step in range(6):
        now[0] = 100.0 + step * 0.039          # up to 0.195 s later: still skipped
        u = p.acquire()
        picks.append(u)
        p.release(u)
    assert set(picks) == {"http://a"}
    now[0] = 100.21
    picks = {p.acquire() for _ in range(2)}
    assert "http://dead" in picks
    solo = ReplicaPicker(["http://dead"], down_s=5)
    solo.mark_down("http://dead")
    assert solo.acquire() == "http://dead"   # nothing else to choose: keep trying (and recording)


def test_a_chain_stays_on_its_replica_only_where_the_policy_would_pick_it():
    """``prefers``: the closed loop's chain keeps a stream on its socket only where ``acquire``
    would pick that replica anyway (counting the ending request as done), so a replica with
    fewer requests, or one back from the dead, still draws streams over."""
    p = ReplicaPicker(["http://a", "http://b"])
    p.outstanding.update({"http://a": 3, "http://b": 2})
    assert p.prefers("http://a")                # 2 of its own left vs 2: a tie stays
    p.outstanding["http://b"] = 1
    assert not p.prefers("http://a")            # b has fewer: the loop moves the stream there
    assert p.prefers("http://b")
    p.mark_down("http://a")
    assert not p.prefers("http://a")            # refused a connection a moment ago
    single = ReplicaPicker(["http://only"])
    single.outstanding["http://only"] = 9
    assert single.prefers("http://only")
    rr = ReplicaPicker(["http://a", "http://b"], policy="round-robin")
    assert [rr.prefers("http://a"), rr.prefers("http://a"), rr.prefers("http://b"), rr.acquire()] == \
        [True, False, True, "http://a"]
