"""The chaos campaign's checkers and scheduler, on made-up observations: each checker reports
exactly the overlaps it must (and none it must not), and a seed fixes the plan of faults."""

from __future__ import annotations

from pathlib import Path

from tests.support.chaos.campaign import longest_gap, stats
from tests.support.chaos.checkers import Interval, SplitBrainProbe, overlapping_commits
from tests.support.chaos.faults import KINDS, Scheduler, resolve
from tests.support.writer import Write

from pgha.cli.localcluster import MemberProc


def _member(name: str) -> MemberProc:
    return MemberProc(name, Path("/nonexistent"), Path("/nonexistent"), 1, 2, Path("/x"))


def _probe(intervals: dict[str, list[tuple[float, float]]]) -> SplitBrainProbe:
    probe = SplitBrainProbe([_member(n) for n in intervals])
    probe.intervals = {n: [Interval(n, a, b) for a, b in spans]
                       for n, spans in intervals.items()}
    return probe


def test_probe_reports_overlapping_writable_intervals_of_two_members() -> None:
    probe = _probe({"pg1": [(0.0, 5.0), (9.0, 9.1)], "pg2": [(4.5, 8.0)], "pg3": []})
    assert probe.overlaps() == [(4.5, 5.0, ["pg1", "pg2"])]
    assert probe.overlaps(since=6.0) == []


def test_probe_handover_without_overlap_is_clean() -> None:
    # pg1 writable until 5.0, pg2 from 5.01: a clean failover, no instant with two
    probe = _probe({"pg1": [(0.0, 5.0)], "pg2": [(5.01, 9.0)]})
    assert probe.overlaps() == []


def test_probe_never_pairs_a_member_with_itself() -> None:
    probe = _probe({"pg1": [(0.0, 5.0), (4.0, 6.0)]})
    assert probe.overlaps() == []


def _w(seq: int, started: float, acked: float | None, member: str) -> Write:
    return Write(seq, started, acked, member, xid=seq)


def test_overlapping_commits_on_two_members() -> None:
    writes = [_w(1, 0.0, 0.3, "pg1"), _w(2, 0.2, 0.25, "pg2"), _w(3, 1.0, 1.1, "pg2"),
              _w(4, 1.05, None, "pg1")]
    pairs = overlapping_commits(writes)
    assert [(a.seq, b.seq) for a, b in pairs] == [(1, 2)]


def test_sequential_commits_on_two_members_do_not_overlap() -> None:
    writes = [_w(1, 0.0, 0.1, "pg1"), _w(2, 0.2, 0.25, "pg2"), _w(3, 0.3, 0.35, "pg2")]
    assert overlapping_commits(writes) == []


def test_longest_gap_counts_from_the_last_write_before_the_fault() -> None:
    writes = [_w(1, 0.0, 1.0, "pg1"), _w(2, 1.0, 2.0, "pg1"), _w(3, 2.5, None, "pg1"),
              _w(4, 6.0, 6.5, "pg2"), _w(5, 7.0, 7.1, "pg2")]
    assert longest_gap(writes, 2.2, 10.0) == 4.5
    assert longest_gap(writes, 8.0, 10.0) is None


def test_stats() -> None:
    assert stats([]) == {"n": 0, "median": None, "p95": None, "max": None}
    s = stats([float(x) for x in range(1, 21)])
    assert s["n"] == 20 and s["median"] == 10.5 and s["max"] == 20.0 and s["p95"] == 19.0


def test_a_seed_fixes_the_plan() -> None:
    def plan(seed: int) -> list[tuple[str, str, float, str | None]]:
        s = Scheduler(seed, ttl=5.0, has_dcs_leader=True)
        out = []
        for _ in range(30):
            p = s.next()
            out.append((p.kind.name, p.aim, p.hold, p.second.kind.name if p.second else None))
        return out

    assert plan(7) == plan(7)
    assert plan(7) != plan(8)
    kinds = {k for seed in range(5) for k, *_ in plan(seed)}
    assert kinds == {k.name for k in KINDS}


def test_scheduler_leaves_out_leader_changes_without_a_dcs_leader() -> None:
    s = Scheduler(3, ttl=5.0, has_dcs_leader=False)
    assert all(s.next().kind.name != "dcs_leader_change" for _ in range(200))


def test_overlapping_faults_aim_at_different_members() -> None:
    s = Scheduler(1, ttl=5.0, has_dcs_leader=True, overlap=1.0)
    for _ in range(100):
        p = s.next()
        if p.second is not None and p.aim != "dcs":
            assert p.second.aim != p.aim
            assert p.second.kind.aim != "dcs" or p.aim != "dcs"


def test_resolve_targets() -> None:
    import random

    rng = random.Random(0)
    names = ["pg1", "pg2", "pg3"]
    assert resolve("leader", "pg2", names, rng, set()) == "pg2"
    assert resolve("replica", "pg2", names, rng, set()) in {"pg1", "pg3"}
    assert resolve("leader", "pg2", names, rng, {"pg2"}) in {"pg1", "pg3"}
    assert resolve("dcs", "pg2", names, rng, set()) is None
    assert resolve("replica", "pg1", names, rng, {"pg2", "pg3"}) == "pg1"
