"""The campaign's check of pgha's discarded-WAL reports (:mod:`pgha.pg.discarded`) against the
writes the checkers saw lost.

Every acknowledged write that is missing on the primary was committed (and flushed) on a
former primary whose WAL past the divergence point was then rewound or re-cloned away; the
report of that rejoin must name its transaction. :class:`DiscardWatch` reads each member's
reports file (``<data_dir parent>/<name>-pgha-discarded.json``) after every fault, keeps the
reports it had not seen yet, and says which lost writes no report names ("unexplained": a
report missed a transaction, or a write was lost some other way -- both defects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgha.cli.localcluster import MemberProc
from pgha.pg.discarded import load_reports
from pgha.pg.waldump import committed_xids
from tests.support.writer import Write


def _key(report: dict[str, Any]) -> tuple[Any, ...]:
    return (report.get("member"), report.get("timeline"), report.get("from_lsn"),
            report.get("recorded_at"))


@dataclass
class DiscardWatch:
    members: list[MemberProc]
    seen: set[tuple[Any, ...]] = field(default_factory=set)
    named: set[int] = field(default_factory=set)  # committed xids named by any report so far
    incomplete: int = 0  # reports that could not list every transaction

    def new_reports(self) -> list[dict[str, Any]]:
        """Reports recorded since the last call (every member's file)."""
        fresh = []
        for m in self.members:
            for report in load_reports(m.data_dir.parent / f"{m.name}-pgha-discarded.json"):
                if _key(report) in self.seen:
                    continue
                self.seen.add(_key(report))
                self.named |= committed_xids(report)
                if not report.get("complete"):
                    self.incomplete += 1
                fresh.append(report)
        return fresh

    def unexplained(self, lost: list[Write]) -> list[Write]:
        """The lost writes whose transaction no report has named."""
        return [w for w in lost if w.xid is None or w.xid not in self.named]


def brief(report: dict[str, Any]) -> dict[str, Any]:
    """What a fault record keeps of a report."""
    return {k: report.get(k) for k in ("member", "timeline", "method", "from_lsn", "to_lsn",
                                       "bytes", "complete", "reason")} | {
        "committed": len(committed_xids(report))}
