"""The evaluation pass: add reported runs to job_metrics, sample it, judge every job,
write the alerts.

Runs every `JOBWARDEN_POLL_INTERVAL` on the leader. `run_once(ctx, now)` is one
whole pass; the clock is its parameter, so tests drive it with any `now`.
"""

from dataclasses import dataclass, replace
from datetime import datetime

from jobwarden.alerts.store import Signal, SyncResult, log_changes, sync_alerts
from jobwarden.config import Settings
from jobwarden.context import AppContext
from jobwarden.db.pg import Conn
from jobwarden.logsetup import get_logger
from jobwarden.monitoring.baselines import read_baselines
from jobwarden.monitoring.expectations import list_expectations
from jobwarden.monitoring.history import recent_windows
from jobwarden.monitoring.model import Finding, JobFacts, Knobs, Rule, Verdict, Window
from jobwarden.monitoring.rollup import FoldResult, fold_runs
from jobwarden.monitoring.rules import evaluate
from jobwarden.monitoring.runfacts import ReportedFacts, reported_facts
from jobwarden.monitoring.sampling import Sample, SamplingResult, later, sample_jobs

log = get_logger(__name__)

EVALUATION_JOB = "evaluate"  # its name in the scheduler and the log
MONITORING_RULES = frozenset(rule.value for rule in Rule)  # the alerts this pass owns


def default_knobs(settings: Settings) -> Knobs:
    return Knobs(
        failure_threshold=settings.failure_threshold,
        failure_rate=settings.failure_rate,
        failure_window=settings.failure_window,
        failure_min_executions=settings.failure_min_executions,
        grace=settings.default_grace,
        regression_factor=settings.regression_factor,
        regression_window=settings.regression_window,
        regression_min_executions=settings.regression_min_executions,
        max_runtime=settings.default_max_runtime,
    )


@dataclass(frozen=True)
class EvaluationResult:
    sampling: SamplingResult
    verdict: Verdict
    alerts: SyncResult
    folded: FoldResult

    def log_fields(self) -> dict[str, object]:
        return {
            "reported": self.folded.runs,
            "jobs": len(self.verdict.jobs),
            "runs": sum(d.executions for d in self.sampling.deltas),
            "failures": sum(d.failures for d in self.sampling.deltas),
            "firing": len(self.verdict.findings),
            "raised": len(self.alerts.raised),
            "resolved": len(self.alerts.resolved),
            "resets": len(self.sampling.resets),
        }


def signal(finding: Finding) -> Signal:
    return Signal(
        fingerprint=finding.fingerprint,
        type=finding.rule.value,
        severity=finding.severity,
        title=finding.title,
        message=finding.message,
        job_id=finding.job_id,
        details=finding.figures,
    )


async def gather_facts(
    conn: Conn, samples: dict[str, Sample], now: datetime, knobs: Knobs
) -> list[JobFacts]:
    """What the rules need of every job: seen in job_metrics, expected to appear, or
    reporting its runs (judged from those runs, monitoring/runfacts.py)."""
    expectations = await list_expectations(conn)
    windows = await recent_windows(conn, now, knobs.failure_window, knobs.regression_window)
    baselines = await read_baselines(conn)
    reported = await reported_facts(conn, now, knobs.failure_window, knobs.regression_window)
    facts = []
    for job_id in sorted(samples.keys() | expectations.keys() | reported.keys()):
        sample = samples.get(job_id)
        baseline = baselines.get(job_id)
        failure_window, regression_window = windows.get(job_id, (Window(), Window()))
        job = JobFacts(
            job_id=job_id,
            seen=sample is not None,
            last_execution_at=sample.last_execution_at if sample else None,
            last_success_at=sample.last_success_at if sample else None,
            last_failure_at=sample.last_failure_at if sample else None,
            failure_streak=sample.failure_streak if sample else 0,
            failure_window=failure_window,
            regression_window=regression_window,
            baseline_avg_ms=baseline.avg_ms if baseline else None,
            baseline_p95_ms=baseline.p95_ms if baseline else None,
            expectation=expectations.get(job_id),
        )
        runs = reported.get(job_id)
        facts.append(job if runs is None else _from_runs(job, runs))
    return facts


def _from_runs(job: JobFacts, runs: ReportedFacts) -> JobFacts:
    """A job with reported runs: streak and windows from its runs; its newest times
    the later of its runs' and its counters' (the web app may count it too)."""
    return replace(
        job,
        seen=job.seen or runs.last_run_at is not None,
        reported=True,
        last_execution_at=later(job.last_execution_at, runs.last_run_at),
        last_success_at=later(job.last_success_at, runs.last_success_at),
        last_failure_at=later(job.last_failure_at, runs.last_failure_at),
        failure_streak=runs.failure_streak,
        failure_window=runs.failure_window,
        regression_window=runs.regression_window,
        last_success_ms=runs.last_success_ms,
        oldest_open_start=runs.oldest_open_start,
        open_runs=runs.open_runs,
        # a baseline of its counters (a p95 of per-pass averages) is no measure for
        # the p95 of its runs: none until one is computed from them
        baseline_avg_ms=job.baseline_avg_ms if runs.baseline_from_runs else None,
        baseline_p95_ms=job.baseline_p95_ms if runs.baseline_from_runs else None,
    )


async def run_once(ctx: AppContext, now: datetime) -> EvaluationResult:
    knobs = default_knobs(ctx.settings)
    async with ctx.db.connection() as conn:
        folded = await fold_runs(conn, now)
        sampling = await sample_jobs(conn, now)
        facts = await gather_facts(conn, sampling.samples, now, knobs)
        verdict = evaluate(facts, knobs, now)
        signals = {f.fingerprint: signal(f) for f in verdict.findings.values()}
        alerts = await sync_alerts(
            conn,
            list(signals.values()),
            verdict.held,
            now,
            rules=MONITORING_RULES,
            resolve_after=ctx.settings.resolve_after,
        )
    log_changes(alerts, signals)
    return EvaluationResult(sampling=sampling, verdict=verdict, alerts=alerts, folded=folded)
