-- jobwarden 0002: what watching the jobs needs, all in schema "jobwarden".
--
-- job_samples       the last reading of each job_metrics row, to diff the next one against
-- job_history       what happened per job per pass (only passes where something happened)
-- job_expectations  schedule and knobs per job, set with `jobwarden jobs set`
-- alert_state       one row per fingerprint (rule + job): dedup, hysteresis, hand-resolve
--
-- Every instant here is timestamptz; values read from the shared tables
-- (`timestamp(3)` holding UTC, as Prisma writes them) are converted on reading.

CREATE TABLE jobwarden.job_samples (
    job_id               text PRIMARY KEY,
    row_id               text NOT NULL,          -- job_metrics.id: another id means the row was recreated
    row_created_at       timestamptz NOT NULL,
    total_executions     integer NOT NULL,
    success_count        integer NOT NULL,
    failure_count        integer NOT NULL,
    total_duration_ms    bigint NOT NULL,
    max_duration_ms      integer NOT NULL,
    last_execution_at    timestamptz,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    failure_streak       integer NOT NULL DEFAULT 0,  -- failures since the last success, at least
    first_seen_at        timestamptz NOT NULL,
    sampled_at           timestamptz NOT NULL,
    resets               integer NOT NULL DEFAULT 0
);

CREATE TABLE jobwarden.job_history (
    job_id            text NOT NULL,
    sampled_at        timestamptz NOT NULL,
    executions        integer NOT NULL,
    successes         integer NOT NULL,
    failures          integer NOT NULL,
    duration_ms       bigint NOT NULL,          -- total duration of the new runs
    max_duration_ms   integer,                  -- the new maximum, when maxDurationMs grew
    last_execution_at timestamptz,
    PRIMARY KEY (job_id, sampled_at)
);
-- Rules read the recent window of every job; baselines a trailing window.
CREATE INDEX job_history_sampled_at_idx ON jobwarden.job_history (sampled_at);

CREATE TABLE jobwarden.job_expectations (
    job_id             text PRIMARY KEY,
    every_seconds      double precision CHECK (every_seconds > 0 AND every_seconds <= 31622400),
    cron               text,
    timezone           text NOT NULL DEFAULT 'UTC',
    schedule_set_at    timestamptz,             -- a job that never ran is due from here
    grace_seconds      double precision CHECK (grace_seconds >= 0 AND grace_seconds <= 31622400),
    failure_threshold  integer CHECK (failure_threshold > 0),
    failure_rate       double precision CHECK (failure_rate > 0 AND failure_rate <= 1),
    regression_factor  double precision CHECK (regression_factor > 1),
    paused             boolean NOT NULL DEFAULT false,
    maintenance_until  timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (every_seconds IS NULL OR cron IS NULL)
);

CREATE TABLE jobwarden.alert_state (
    fingerprint     text PRIMARY KEY,          -- "<rule>:<jobId>", or "system_health"
    rule            text NOT NULL,
    job_id          text,
    alert_id        text,                      -- the open row in "alerts", if any
    occurrences     integer NOT NULL DEFAULT 0,
    first_seen_at   timestamptz,
    last_seen_at    timestamptz,
    healthy_passes  integer NOT NULL DEFAULT 0,
    -- resolved by hand while still firing: stay quiet until the condition clears once
    suppressed      boolean NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_state_active_idx ON jobwarden.alert_state (fingerprint)
    WHERE alert_id IS NOT NULL OR suppressed;

