"""What the rules judge and what they say: plain values, no I/O."""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from jobwarden.monitoring.schedule import Schedule


class Rule(StrEnum):
    JOB_FAILURE = "job_failure"
    JOB_MISSED = "job_missed"
    JOB_STUCK = "job_stuck"
    PERFORMANCE_REGRESSION = "performance_regression"
    SYSTEM_HEALTH = "system_health"


SEVERITY = {
    Rule.JOB_FAILURE: "ERROR",
    Rule.JOB_MISSED: "ERROR",
    Rule.JOB_STUCK: "WARNING",
    Rule.PERFORMANCE_REGRESSION: "WARNING",
    Rule.SYSTEM_HEALTH: "CRITICAL",
}


class JobStatus(StrEnum):
    HEALTHY = "healthy"
    LATE = "late"
    FAILING = "failing"
    STUCK = "stuck"
    SLOW = "slow"
    PAUSED = "paused"
    MAINTENANCE = "maintenance"


def fingerprint(rule: Rule, job_id: str | None) -> str:
    """The identity of an alert: one unresolved alert per fingerprint."""
    return rule.value if job_id is None else f"{rule.value}:{job_id}"


@dataclass(frozen=True)
class Knobs:
    """The thresholds a job is judged by: the defaults, or its expectation's overrides."""

    failure_threshold: int
    failure_rate: float
    failure_window: float  # seconds
    failure_min_executions: int
    grace: float  # seconds
    regression_factor: float
    regression_window: float  # seconds
    regression_min_executions: int
    max_runtime: float = 3600.0  # seconds a reported run may take before it is stuck
    min_runtime: float | None = None  # seconds under which a success ran too short


@dataclass(frozen=True)
class Expectation:
    job_id: str
    schedule: Schedule = field(default_factory=Schedule)
    schedule_set_at: datetime | None = None  # when every/cron last changed
    grace: float | None = None
    failure_threshold: int | None = None
    failure_rate: float | None = None
    regression_factor: float | None = None
    max_runtime: float | None = None  # seconds
    min_runtime: float | None = None  # seconds
    paused: bool = False
    maintenance_until: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def scheduled(self) -> bool:
        return self.schedule.every is not None or self.schedule.cron is not None

    def in_maintenance(self, now: datetime) -> bool:
        return self.maintenance_until is not None and self.maintenance_until > now

    def knobs(self, defaults: Knobs) -> Knobs:
        return Knobs(
            failure_threshold=self.failure_threshold or defaults.failure_threshold,
            failure_rate=self.failure_rate or defaults.failure_rate,
            failure_window=defaults.failure_window,
            failure_min_executions=defaults.failure_min_executions,
            grace=defaults.grace if self.grace is None else self.grace,
            regression_factor=self.regression_factor or defaults.regression_factor,
            regression_window=defaults.regression_window,
            regression_min_executions=defaults.regression_min_executions,
            max_runtime=self.max_runtime or defaults.max_runtime,
            min_runtime=self.min_runtime or defaults.min_runtime,
        )


@dataclass(frozen=True)
class Window:
    """What happened to one job over a recent window, summed from its history (or from
    its reported runs: then `p95_ms` too, of its successful runs)."""

    executions: int = 0
    failures: int = 0
    duration_ms: int = 0
    p95_ms: float | None = None

    @property
    def failure_rate(self) -> float:
        return self.failures / self.executions if self.executions else 0.0

    @property
    def avg_ms(self) -> float | None:
        return self.duration_ms / self.executions if self.executions else None


@dataclass(frozen=True)
class JobFacts:
    """Everything the rules know of one job at one pass."""

    job_id: str
    seen: bool  # has a job_metrics row
    last_execution_at: datetime | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    failure_streak: int = 0
    failure_window: Window = field(default_factory=Window)
    regression_window: Window = field(default_factory=Window)
    baseline_avg_ms: float | None = None
    expectation: Expectation | None = None
    # Jobs with reported runs (jobwarden.runs): judged from their runs.
    reported: bool = False
    baseline_p95_ms: float | None = None
    last_success_ms: int | None = None  # the newest success's duration
    oldest_open_start: datetime | None = None  # a started run not ended yet
    open_runs: int = 0


@dataclass(frozen=True)
class Finding:
    """A rule that fires: what the alert says."""

    rule: Rule
    job_id: str | None
    title: str
    message: str
    figures: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.job_id)

    @property
    def severity(self) -> str:
        return SEVERITY[self.rule]


@dataclass(frozen=True)
class JobVerdict:
    job_id: str
    status: JobStatus
    reason: str
    next_due_at: datetime | None


@dataclass(frozen=True)
class Verdict:
    """One pass's judgement: what fires, what is held (neither fires nor heals), per job."""

    findings: dict[str, Finding]  # fingerprint -> finding
    held: frozenset[str]  # fingerprints not judged this pass (paused, maintenance, ...)
    jobs: dict[str, JobVerdict]
