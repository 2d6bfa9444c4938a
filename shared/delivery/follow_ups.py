"""Re-publishing deferred work: the one place a delivery task's follow-ups are published."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shared.delivery.types import DeliveryOutcome, OutcomeStatus
from shared.services.outbox import publish, publish_later


def publish_follow_ups(
    task_name: str,
    outcomes: Mapping[int, DeliveryOutcome],
    *,
    on_failure: Callable[[list[int]], None] | None = None,
) -> None:
    """Publish `task_name` again for each deferred id the broker should hold: due at its
    `due_at` (an ETA) when set, else after its `delay` (a countdown). `on_failure(ids)` marks
    the rows of a failed ETA publish for the sweeper; a failed countdown publish leaves its row
    to the sweeper's grace period. An outcome with neither waits in the DB for the sweeper."""
    waiting = {pk: o for pk, o in outcomes.items() if o.status == OutcomeStatus.DEFERRED}
    due = {pk: o.due_at for pk, o in waiting.items() if o.due_at is not None}
    if due and not publish_later(task_name, due) and on_failure is not None:
        on_failure(list(due))
    for pk, outcome in waiting.items():
        if outcome.due_at is None and outcome.delay is not None:
            publish(task_name, [pk], countdown=max(outcome.delay, 0.0) or None)
