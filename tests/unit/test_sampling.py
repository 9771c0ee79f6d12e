"""Comparing a job_metrics reading with the previous sample: what happened since."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from jobwarden.monitoring.sampling import Delta, Reading, Sample, compare

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PASS = timedelta(seconds=30)


def reading(
    ok: int = 8,
    failed: int = 2,
    *,
    total: int | None = None,
    duration_ms: int = 5000,
    max_ms: int = 900,
    last_ok: datetime | None = T0 - timedelta(minutes=5),
    last_failed: datetime | None = T0 - timedelta(minutes=10),
    row_id: str = "row-1",
) -> Reading:
    lasts = [t for t in (last_ok, last_failed) if t is not None]
    return Reading(
        job_id="content-generation",
        row_id=row_id,
        row_created_at=T0 - timedelta(days=30),
        total_executions=ok + failed if total is None else total,
        success_count=ok,
        failure_count=failed,
        total_duration_ms=duration_ms,
        max_duration_ms=max_ms,
        last_execution_at=max(lasts, default=None),
        last_success_at=last_ok,
        last_failure_at=last_failed,
    )


def first_sample(first: Reading | None = None) -> Sample:
    sample, delta = compare(None, first or reading(), T0)
    assert delta is None
    return sample


def test_a_job_seen_for_the_first_time_is_sampled_without_a_delta() -> None:
    first = reading()
    sample, delta = compare(None, first, T0)
    assert delta is None
    assert (sample.total_executions, sample.success_count, sample.failure_count) == (10, 8, 2)
    assert sample.first_seen_at == sample.sampled_at == T0
    assert (sample.failure_streak, sample.resets) == (0, 0)


def test_grown_counters_are_what_happened_since_the_last_pass() -> None:
    newest = T0 + timedelta(seconds=20)
    now = reading(
        ok=9,
        failed=4,
        duration_ms=8000,
        max_ms=1200,
        last_ok=T0 + timedelta(seconds=5),
        last_failed=newest,
    )
    sample, delta = compare(first_sample(), now, T0 + PASS)
    assert delta == Delta(
        job_id="content-generation",
        executions=3,
        successes=1,
        failures=2,
        duration_ms=3000,
        max_duration_ms=1200,
        last_execution_at=newest,
    )
    assert sample.total_executions == 13
    assert sample.first_seen_at == T0
    assert sample.sampled_at == T0 + PASS


def test_the_maximum_is_reported_only_when_it_grew() -> None:
    _, delta = compare(first_sample(), reading(ok=9, duration_ms=5400), T0 + PASS)
    assert delta is not None
    assert delta.max_duration_ms is None
    assert (delta.executions, delta.duration_ms) == (1, 400)


def test_the_failure_streak_grows_with_failures_and_ends_with_a_success() -> None:
    sample = first_sample()
    streaks = []
    for step, (ok, failed) in enumerate([(8, 4), (8, 5), (8, 7), (9, 7)], start=1):
        now = T0 + step * PASS
        last_ok = now if ok > 8 else T0 - timedelta(minutes=5)
        last_failed = now - timedelta(seconds=10)
        sample, _ = compare(
            sample, reading(ok, failed, last_ok=last_ok, last_failed=last_failed), now
        )
        streaks.append(sample.failure_streak)
    assert streaks == [2, 3, 5, 0]


@pytest.mark.parametrize(
    ("failure_offset", "streak"),
    [
        (timedelta(seconds=10), 1),  # the failure came after the success
        (timedelta(seconds=-10), 0),  # the success came last
    ],
)
def test_a_pass_with_both_successes_and_failures_counts_only_a_last_failure(
    failure_offset: timedelta, streak: int
) -> None:
    previous = replace(first_sample(), failure_streak=4)
    last_ok = T0 + timedelta(seconds=15)
    now = reading(ok=10, failed=4, last_ok=last_ok, last_failed=last_ok + failure_offset)
    sample, delta = compare(previous, now, T0 + PASS)
    assert sample.failure_streak == streak
    assert delta is not None
    assert (delta.successes, delta.failures) == (2, 2)


@pytest.mark.parametrize(
    "after",
    [
        reading(ok=1, failed=0, duration_ms=100),  # the counters went down
        reading(ok=8, failed=2, duration_ms=4000),  # only the total duration went down
        reading(ok=20, failed=5, duration_ms=9000, row_id="row-2"),  # deleted and created again
    ],
)
def test_a_reset_takes_a_fresh_sample_and_reports_nothing(after: Reading) -> None:
    previous = replace(first_sample(), failure_streak=2, resets=1)
    sample, delta = compare(previous, after, T0 + PASS)
    assert delta is None
    assert sample.resets == 2
    assert sample.failure_streak == 0
    assert sample.first_seen_at == T0
    assert (sample.row_id, sample.total_executions) == (after.row_id, after.total_executions)
    # The next pass counts from the fresh sample, not from before the reset.
    later = replace(
        after, success_count=after.success_count + 1, total_executions=after.total_executions + 1
    )
    _, next_delta = compare(sample, later, T0 + 2 * PASS)
    assert next_delta is not None
    assert next_delta.executions == 1


def test_nothing_new_means_no_delta() -> None:
    previous = replace(first_sample(), failure_streak=2)
    sample, delta = compare(previous, reading(), T0 + PASS)
    assert delta is None
    assert sample.failure_streak == 2
    assert sample.sampled_at == T0 + PASS
