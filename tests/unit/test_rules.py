"""The rules judge one pass: what fires, what is held, and what each job's status is."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobwarden.monitoring.model import (
    Expectation,
    JobFacts,
    JobStatus,
    Knobs,
    Rule,
    Window,
)
from jobwarden.monitoring.rules import (
    evaluate,
    job_failure,
    job_missed,
    performance_regression,
)
from jobwarden.monitoring.schedule import Schedule

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DEFAULTS = Knobs(
    failure_threshold=3,
    failure_rate=0.5,
    failure_window=3600,
    failure_min_executions=10,
    grace=300,
    regression_factor=1.5,
    regression_window=3600,
    regression_min_executions=10,
)
JOB = "content-generation"


def facts(job: str = JOB, *, seen: bool = True, **kwargs: Any) -> JobFacts:
    return JobFacts(job_id=job, seen=seen, **kwargs)


def every(
    seconds: float, *, created_at: datetime = NOW - timedelta(days=30), **kwargs: Any
) -> Expectation:
    return Expectation(JOB, schedule=Schedule(every=seconds), created_at=created_at, **kwargs)


def failing(job: str = JOB, **kwargs: Any) -> JobFacts:
    """Three failures in a row, the last at 10:42 UTC today."""
    return facts(job, failure_streak=3, last_failure_at=NOW.replace(hour=10, minute=42), **kwargs)


def missed(job: str) -> JobFacts:
    """Runs every 10 minutes, last ran an hour ago."""
    expectation = Expectation(job, schedule=Schedule(every=600), created_at=NOW - timedelta(days=1))
    return facts(job, last_execution_at=NOW - timedelta(hours=1), expectation=expectation)


def on_time(job: str) -> JobFacts:
    expectation = Expectation(job, schedule=Schedule(every=600), created_at=NOW - timedelta(days=1))
    return facts(job, last_execution_at=NOW - timedelta(minutes=1), expectation=expectation)


def slow(job: str = JOB, **kwargs: Any) -> JobFacts:
    """Ten runs averaging 300 ms against a 100 ms baseline."""
    return facts(
        job,
        regression_window=Window(executions=10, duration_ms=3000),
        baseline_avg_ms=100,
        **kwargs,
    )


# job_failure


@pytest.mark.parametrize(("streak", "fires"), [(2, False), (3, True), (7, True)])
def test_a_failure_streak_fires_from_the_threshold_on(streak: int, fires: bool) -> None:
    finding = job_failure(facts(failure_streak=streak), DEFAULTS, NOW)
    assert (finding is not None) is fires


def test_the_streak_message_names_the_job_the_count_and_the_last_failure() -> None:
    finding = job_failure(failing(), DEFAULTS, NOW)
    assert finding is not None
    assert finding.message == "content-generation failed 3 times in a row; last failure 10:42 UTC"
    assert finding.rule is Rule.JOB_FAILURE
    assert finding.severity == "ERROR"
    assert finding.fingerprint == "job_failure:content-generation"
    assert finding.figures["failureStreak"] == 3
    assert finding.figures["lastFailureAt"] == "2026-06-01T10:42:00Z"


def test_a_last_failure_on_another_day_is_shown_with_its_date() -> None:
    last = datetime(2026, 5, 31, 23, 50, tzinfo=UTC)
    finding = job_failure(facts(failure_streak=3, last_failure_at=last), DEFAULTS, NOW)
    assert finding is not None
    assert finding.message.endswith("last failure 2026-05-31 23:50 UTC")


@pytest.mark.parametrize(
    ("executions", "failures", "fires"),
    [
        (10, 5, True),  # exactly the rate, exactly the minimum
        (40, 30, True),
        (10, 4, False),  # just below the rate
        (9, 9, False),  # every run failed, but too few runs to judge a rate
    ],
)
def test_a_failure_rate_fires_at_the_threshold_with_enough_runs(
    executions: int, failures: int, fires: bool
) -> None:
    window = Window(executions=executions, failures=failures)
    finding = job_failure(facts(failure_streak=1, failure_window=window), DEFAULTS, NOW)
    assert (finding is not None) is fires


def test_the_rate_message_names_the_figures() -> None:
    window = Window(executions=10, failures=6)
    finding = job_failure(facts(failure_window=window), DEFAULTS, NOW)
    assert finding is not None
    assert finding.message == "content-generation failed 6 of 10 runs (60%) in the last 1h"
    assert finding.figures["failureRate"] == 0.6


# job_missed


def test_an_every_job_is_missed_only_after_its_due_time_plus_grace() -> None:
    last = NOW - timedelta(hours=2)
    job = facts(last_execution_at=last, expectation=every(3600))
    due = last + timedelta(hours=1)
    assert job_missed(job, DEFAULTS, due + timedelta(seconds=300)) is None
    finding = job_missed(job, DEFAULTS, due + timedelta(seconds=301))
    assert finding is not None
    assert finding.figures["dueAt"] == "2026-06-01T11:00:00Z"
    assert finding.message == (
        "content-generation has not run since 10:00 UTC; it was due at 11:00 UTC "
        "(every 1h, grace 5m)"
    )


def test_a_job_that_never_ran_is_due_relative_to_its_expectation() -> None:
    job = facts(seen=False, expectation=every(600, created_at=NOW))
    assert job_missed(job, DEFAULTS, NOW + timedelta(minutes=15)) is None
    finding = job_missed(job, DEFAULTS, NOW + timedelta(minutes=15, seconds=1))
    assert finding is not None
    assert "content-generation has never run; it was due at 12:10 UTC" in finding.message


def test_a_daemon_that_was_down_across_a_due_time_reports_it_on_its_first_pass() -> None:
    job = facts(last_execution_at=NOW - timedelta(days=3), expectation=every(600))
    finding = job_missed(job, DEFAULTS, NOW)
    assert finding is not None
    assert finding.figures["lateSeconds"] == pytest.approx(3 * 86400 - 600 - 300)


def test_a_job_without_a_schedule_is_never_missed() -> None:
    long_ago = NOW - timedelta(days=30)
    assert job_missed(facts(last_execution_at=long_ago), DEFAULTS, NOW) is None
    unscheduled = Expectation(JOB, failure_threshold=5, created_at=long_ago)
    assert (
        job_missed(facts(last_execution_at=long_ago, expectation=unscheduled), DEFAULTS, NOW)
        is None
    )


def test_a_missed_cron_job_gives_its_due_time_in_utc() -> None:
    # 02:00 in New York in June is 06:00 UTC.
    expectation = Expectation(
        JOB,
        schedule=Schedule(cron="0 2 * * *", timezone="America/New_York"),
        created_at=datetime(2026, 6, 1, 0, 0, tzinfo=UTC),
    )
    now = datetime(2026, 6, 1, 6, 10, tzinfo=UTC)
    finding = job_missed(facts(expectation=expectation), DEFAULTS, now)
    assert finding is not None
    assert "it was due at 06:00 UTC" in finding.message
    assert datetime.fromisoformat(finding.figures["dueAt"]) == datetime(2026, 6, 1, 6, tzinfo=UTC)


# performance_regression


@pytest.mark.parametrize(
    ("executions", "duration_ms", "baseline", "fires"),
    [
        (10, 1510, 100.0, True),  # 151 ms > 150 ms
        (10, 1500, 100.0, False),  # exactly baseline x factor is not a regression
        (9, 2700, 100.0, False),  # 300 ms, but too few runs
        (10, 3000, None, False),  # no baseline yet
    ],
)
def test_a_regression_fires_above_baseline_times_factor_with_enough_runs(
    executions: int, duration_ms: int, baseline: float | None, fires: bool
) -> None:
    window = Window(executions=executions, duration_ms=duration_ms)
    job = facts(regression_window=window, baseline_avg_ms=baseline)
    assert (performance_regression(job, DEFAULTS, NOW) is not None) is fires


def test_the_regression_message_names_the_figures() -> None:
    finding = performance_regression(slow(), DEFAULTS, NOW)
    assert finding is not None
    assert finding.severity == "WARNING"
    assert finding.message == (
        "content-generation averaged 300 ms over 10 runs in the last 1h, "
        "3.0x its baseline of 100 ms (threshold 1.5x)"
    )


# system_health


def test_every_scheduled_job_missed_at_once_is_one_system_health_alert() -> None:
    verdict = evaluate([missed("billing"), missed("reports")], DEFAULTS, NOW)
    assert list(verdict.findings) == ["system_health"]
    blind = verdict.findings["system_health"]
    assert blind.severity == "CRITICAL"
    assert "billing, reports" in blind.message
    assert {"job_missed:billing", "job_missed:reports"} <= verdict.held
    assert {v.status for v in verdict.jobs.values()} == {JobStatus.LATE}


def test_a_single_scheduled_job_missed_is_a_job_missed_alert() -> None:
    verdict = evaluate([missed("billing"), facts("adhoc")], DEFAULTS, NOW)
    assert set(verdict.findings) == {"job_missed:billing"}
    assert not verdict.held


def test_some_scheduled_jobs_missed_are_job_missed_alerts() -> None:
    verdict = evaluate([missed("billing"), missed("reports"), on_time("emails")], DEFAULTS, NOW)
    assert set(verdict.findings) == {"job_missed:billing", "job_missed:reports"}
    assert not verdict.held


def test_system_health_leaves_other_rules_alone() -> None:
    both = missed("billing")
    failing_too = replace(both, failure_streak=3)
    verdict = evaluate([failing_too, missed("reports")], DEFAULTS, NOW)
    assert set(verdict.findings) == {"system_health", "job_failure:billing"}


# paused and maintenance


def test_a_paused_job_is_held_whatever_its_state() -> None:
    job = failing(
        last_execution_at=NOW - timedelta(days=1),
        regression_window=Window(executions=10, duration_ms=3000),
        baseline_avg_ms=100,
        expectation=every(600, paused=True),
    )
    verdict = evaluate([job], DEFAULTS, NOW)
    assert verdict.findings == {}
    assert verdict.held == {
        "job_failure:content-generation",
        "job_missed:content-generation",
        "job_stuck:content-generation",
        "performance_regression:content-generation",
    }
    assert verdict.jobs[JOB].status is JobStatus.PAUSED


def test_a_job_in_maintenance_is_held_until_the_window_ends() -> None:
    window_end = NOW + timedelta(hours=1)
    job = failing(expectation=Expectation(JOB, maintenance_until=window_end))
    during = evaluate([job], DEFAULTS, NOW)
    assert during.findings == {}
    assert "job_failure:content-generation" in during.held
    assert during.jobs[JOB].status is JobStatus.MAINTENANCE
    after = evaluate([job], DEFAULTS, window_end + timedelta(seconds=1))
    assert set(after.findings) == {"job_failure:content-generation"}
    assert not after.held
    assert after.jobs[JOB].status is JobStatus.FAILING


def test_paused_jobs_do_not_count_towards_system_health() -> None:
    paused = replace(missed("reports"), expectation=every(600, paused=True))
    verdict = evaluate([missed("billing"), paused], DEFAULTS, NOW)
    assert set(verdict.findings) == {"job_missed:billing"}


# job statuses


@pytest.mark.parametrize(
    ("job", "status"),
    [
        (failing(last_execution_at=NOW - timedelta(days=1), expectation=every(600)), "failing"),
        (slow(last_execution_at=NOW - timedelta(days=1), expectation=every(600)), "late"),
        (failing(regression_window=Window(10, 0, 3000), baseline_avg_ms=100), "failing"),
        (slow(), "slow"),
        (facts(last_execution_at=NOW - timedelta(minutes=1), expectation=every(600)), "healthy"),
    ],
)
def test_a_job_shows_its_worst_problem(job: JobFacts, status: str) -> None:
    verdict = evaluate([job], DEFAULTS, NOW).jobs[JOB]
    assert verdict.status == status
    if status == "healthy":
        assert verdict.next_due_at == NOW + timedelta(minutes=9)
    else:
        assert JOB in verdict.reason


# per-job knobs


def test_a_jobs_own_failure_threshold_wins_over_the_default() -> None:
    expectation = Expectation(JOB, failure_threshold=5)
    assert (
        evaluate([facts(failure_streak=4, expectation=expectation)], DEFAULTS, NOW).findings == {}
    )
    fired = evaluate([facts(failure_streak=5, expectation=expectation)], DEFAULTS, NOW)
    assert set(fired.findings) == {"job_failure:content-generation"}


def test_a_jobs_own_failure_rate_wins_over_the_default() -> None:
    window = Window(executions=10, failures=7)
    strict = Expectation(JOB, failure_rate=0.8)
    assert (
        evaluate([facts(failure_window=window, expectation=strict)], DEFAULTS, NOW).findings == {}
    )
    assert evaluate([facts(failure_window=window)], DEFAULTS, NOW).findings


def test_a_jobs_own_grace_wins_over_the_default() -> None:
    job = facts(last_execution_at=NOW - timedelta(minutes=11), expectation=every(600, grace=30))
    assert set(evaluate([job], DEFAULTS, NOW).findings) == {"job_missed:content-generation"}
    no_grace = facts(
        last_execution_at=NOW - timedelta(minutes=10, seconds=1), expectation=every(600, grace=0)
    )
    assert evaluate([no_grace], DEFAULTS, NOW).findings


def test_a_jobs_own_regression_factor_wins_over_the_default() -> None:
    assert (
        evaluate([slow(expectation=Expectation(JOB, regression_factor=4))], DEFAULTS, NOW).findings
        == {}
    )
    assert evaluate(
        [slow(expectation=Expectation(JOB, regression_factor=2))], DEFAULTS, NOW
    ).findings


def test_knobs_a_job_does_not_set_keep_their_defaults() -> None:
    expectation = Expectation(JOB, grace=60)
    assert expectation.knobs(DEFAULTS) == replace(DEFAULTS, grace=60)


# --- jobs with reported runs ------------------------------------------------------------


def reported(**kwargs: Any) -> JobFacts:
    return facts(reported=True, **kwargs)


def test_a_run_open_past_its_max_runtime_is_stuck() -> None:
    started = NOW - timedelta(hours=1, minutes=5)
    stuck = evaluate([reported(oldest_open_start=started, open_runs=1)], DEFAULTS, NOW)
    in_time = evaluate(
        [reported(oldest_open_start=NOW - timedelta(minutes=59), open_runs=1)], DEFAULTS, NOW
    )
    longer = Expectation(JOB, max_runtime=7200)
    allowed = evaluate(
        [reported(oldest_open_start=started, open_runs=1, expectation=longer)], DEFAULTS, NOW
    )
    ended = evaluate([reported()], DEFAULTS, NOW)
    finding = stuck.findings[f"job_stuck:{JOB}"]
    assert finding.severity == "WARNING"
    assert finding.message == (
        f"{JOB} started a run at 10:55 UTC that has not ended after 65m (max runtime 1h)"
    )
    assert finding.figures["openRuns"] == 1
    assert stuck.jobs[JOB].status is JobStatus.STUCK
    assert in_time.findings == {}
    assert allowed.findings == {}
    assert ended.findings == {}


def test_a_success_shorter_than_the_min_runtime_ran_too_short() -> None:
    knobs = replace(DEFAULTS, min_runtime=30)
    short = performance_regression(reported(last_success_ms=1200), knobs, NOW)
    long_enough = performance_regression(reported(last_success_ms=30_000), knobs, NOW)
    no_minimum = performance_regression(reported(last_success_ms=1200), DEFAULTS, NOW)
    assert short is not None
    assert short.rule is Rule.PERFORMANCE_REGRESSION
    assert short.figures["reason"] == "ran too short"
    assert "ran too short" in short.message
    assert long_enough is None
    assert no_minimum is None


def test_a_job_with_reported_runs_is_slow_by_its_p95() -> None:
    """Its p95 is judged against the baseline's p95, not its average against the
    baseline average (a few very slow runs in many quick ones)."""
    window = Window(executions=20, duration_ms=20 * 100, p95_ms=900.0)
    slow = performance_regression(
        reported(regression_window=window, baseline_avg_ms=100, baseline_p95_ms=300), DEFAULTS, NOW
    )
    usual = performance_regression(
        reported(regression_window=window, baseline_avg_ms=100, baseline_p95_ms=800), DEFAULTS, NOW
    )
    assert slow is not None
    assert slow.figures["windowP95Ms"] == 900.0
    assert slow.figures["baselineP95Ms"] == 300
    assert "p95" in slow.message
    assert usual is None
