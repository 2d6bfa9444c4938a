"""The edge bench section's pure parts (bench/pipeline/edge.py, ratelimits.accuracy): the
workloads it enqueues, how it reads achieved rates and 429s, and what it says bounded a run."""

from __future__ import annotations

from collections import Counter

from bench.pipeline.edge import EdgeOrg, EdgeRun, bound_by, workload
from bench.pipeline.ratelimits import Target, accuracy
from bench.pipeline.runs import RunResult


class FakeCtx:
    run = 0

    def chats(self, n: int) -> list[int]:
        self.run += 1
        return [self.run * 100_000 + i for i in range(n)]


ORGS = [EdgeOrg("edge-0", 1, "t0"), EdgeOrg("edge-1", 2, "t1")]


def test_mixed_workload_is_4_providers_by_2_orgs_in_bulks_of_1000() -> None:
    requests = workload(FakeCtx(), "mixed", ORGS, 3000)
    assert [len(items) for _, items in requests] == [1000, 1000, 500, 500]
    pairs = Counter((org.slug, m["provider"]) for org, items in requests for m in items)
    assert len(pairs) == 8
    assert set(pairs.values()) == {375}


def test_telegram_workloads_use_one_new_chat_per_message() -> None:
    ctx = FakeCtx()
    two = workload(ctx, "telegram", ORGS, 600)
    one = workload(ctx, "single", ORGS, 600)
    assert {org.slug for org, _ in one} == {"edge-0"}
    chats = [m["to"] for _, items in two + one for m in items]
    assert len(set(chats)) == 1200
    assert {m["provider"] for _, items in two + one for m in items} == {"telegram"}


def test_accuracy_counts_the_targets_200s_and_429s_only() -> None:
    target = Target("chat", 1.0, "telegram", "/botX/sendMessage", None, chat_id=7)
    sends = [
        {
            "path": "/botX/sendMessage",
            "body": {"chat_id": 7},
            "status": 200,
            "outcome": "sent",
            "time": float(t),
        }
        for t in range(11)
    ]
    other = {
        "path": "/botX/sendMessage",
        "body": {"chat_id": 8},
        "status": 429,
        "outcome": "rate_limited",
        "time": 3.0,
    }
    mine = {**sends[0], "status": 429, "outcome": "rate_limited", "time": 3.5}
    got = accuracy([*sends, other, mine], target)
    assert (got.sent, got.throttled) == (11, 1)
    assert abs(got.measured - 1.0) < 1e-9


def test_bound_by_reads_the_runs_own_cpu() -> None:
    def run(rate: float, cpu: dict[str, float], busy: float) -> EdgeRun:
        n = int(rate * 10)
        return EdgeRun(RunResult(n, n, 0, 10.0, cpu.get("worker", 0.0), cpu, busy * 20, 20.0))

    assert bound_by(run(300, {"worker": 5}, 0.95), 32).startswith("host CPU")
    assert bound_by(run(300, {"worker": 9.5}, 0.6), 32).startswith("worker process")
    assert bound_by(run(300, {"worker": 2}, 0.4), 32).startswith("in-flight")
