-- jobwarden 0005: runs reported to jobwarden (pings, batches, SQL).
--
-- runs          one row per finished run, append-only, in daily partitions by the
--               time jobwarden recorded it (retention drops whole days). The web app
--               may insert here itself (see the README); the CHECKs hold it to the
--               same rules as the HTTP API.
-- run_starts    runs started by a ping and not ended yet: one per job and `rid`
--               ('' without one). The end ping deletes it and writes the run.
-- run_inbox     runs not yet added to job_metrics, filled by a trigger on `runs`:
--               the fold takes them out in the same transaction as it adds them up,
--               so every run is counted exactly once, at a cost that follows the new
--               runs only.
-- run_jobs      per job with reported runs, what the rules need (kept by the fold).

CREATE SEQUENCE jobwarden.runs_id_seq AS bigint;

CREATE TABLE jobwarden.runs (
    id           bigint NOT NULL DEFAULT nextval('jobwarden.runs_id_seq'),
    job_id       text NOT NULL CHECK (job_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    run_id       text,                      -- the ping's rid, when it had one
    outcome      text NOT NULL CHECK (outcome IN ('success', 'failure')),
    started_at   timestamptz,               -- NULL: not known (an end without a start)
    finished_at  timestamptz NOT NULL,
    duration_ms  bigint CHECK (duration_ms BETWEEN 0 AND 2147483647),  -- NULL: not known
                                            -- (job_metrics keeps INTEGER durations)
    error        text,                      -- an excerpt of what the run said
    metadata     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    source       text NOT NULL DEFAULT 'sql' CHECK (source IN ('ping', 'batch', 'sql')),
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recorded_at, id),
    -- Real times only: the newest run's end decides when a job is due and whether
    -- a streak is over, so an end far in the future would hold them for ever.
    CHECK (isfinite(finished_at) AND finished_at >= '2000-01-01'
           AND finished_at < recorded_at + interval '1 day'),
    CHECK (started_at IS NULL
           OR isfinite(started_at) AND started_at >= '2000-01-01' AND started_at <= finished_at)
) PARTITION BY RANGE (recorded_at);
ALTER SEQUENCE jobwarden.runs_id_seq OWNED BY jobwarden.runs.id;
-- A job's recent runs (streaks, windows, percentiles), newest first.
CREATE INDEX runs_job_finished_idx ON jobwarden.runs (job_id, finished_at);

-- Rows no daily partition takes (the daemon was away for days): moved into their
-- day when it is created, so this one stays (nearly) empty.
CREATE TABLE jobwarden.runs_default PARTITION OF jobwarden.runs DEFAULT;

CREATE TABLE jobwarden.run_starts (
    job_id       text NOT NULL CHECK (job_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    run_key      text NOT NULL DEFAULT '',  -- the rid; '' for starts without one
    started_at   timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, run_key)
);
CREATE INDEX run_starts_started_idx ON jobwarden.run_starts (started_at);

CREATE TABLE jobwarden.run_inbox (
    id           bigint PRIMARY KEY,        -- runs.id
    job_id       text NOT NULL,
    outcome      text NOT NULL,
    finished_at  timestamptz NOT NULL,
    duration_ms  bigint
);

-- What the rules need of each job with reported runs, kept by the fold: the newest
-- run, success and failure (by when they finished), the latest success's duration,
-- and the failures since that success (exact, also for runs reported out of order).
CREATE TABLE jobwarden.run_jobs (
    job_id            text PRIMARY KEY,
    last_run_at       timestamptz,
    last_success_at   timestamptz,
    last_failure_at   timestamptz,
    last_success_ms   bigint,
    failure_streak    integer NOT NULL DEFAULT 0,
    baseline_at       timestamptz,  -- when its baseline was last computed from its runs
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- SECURITY DEFINER: a web app inserting runs by SQL needs rights on `runs` only.
CREATE FUNCTION jobwarden.queue_runs_for_fold() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO jobwarden.run_inbox (id, job_id, outcome, finished_at, duration_ms)
    SELECT n.id, n.job_id, n.outcome, n.finished_at, n.duration_ms FROM new_rows n;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_inserted
    AFTER INSERT ON jobwarden.runs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobwarden.queue_runs_for_fold();

-- The partitions of `days` days from `first` (UTC days), those missing. Rows the
-- default partition holds for such a day are moved into it first (PostgreSQL refuses
-- a partition whose rows sit in the default one). Returns how many it created.
CREATE FUNCTION jobwarden.ensure_run_partitions(first date, days integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    day date;
    name text;
    low timestamptz;
    high timestamptz;
    created integer := 0;
BEGIN
    FOR n IN 0 .. days - 1 LOOP
        day := first + n;
        name := 'runs_p' || to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('jobwarden.' || name) IS NOT NULL;
        low := day::timestamp AT TIME ZONE 'UTC';
        high := (day + 1)::timestamp AT TIME ZONE 'UTC';
        -- No row may reach the default partition between the move and the attach.
        LOCK TABLE jobwarden.runs_default IN SHARE ROW EXCLUSIVE MODE;
        EXECUTE format('CREATE TABLE jobwarden.%I (LIKE jobwarden.runs INCLUDING DEFAULTS'
                       ' INCLUDING CONSTRAINTS)', name);
        EXECUTE format('WITH moved AS (DELETE FROM jobwarden.runs_default'
                       ' WHERE recorded_at >= $1 AND recorded_at < $2 RETURNING *)'
                       ' INSERT INTO jobwarden.%I SELECT * FROM moved', name)
            USING low, high;
        EXECUTE format('ALTER TABLE jobwarden.runs ATTACH PARTITION jobwarden.%I'
                       ' FOR VALUES FROM (%L) TO (%L)', name, low, high);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

SELECT jobwarden.ensure_run_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);

-- Runs judged by their duration: `jobwarden jobs set --max-runtime/--min-runtime`.
ALTER TABLE jobwarden.job_expectations
    ADD COLUMN max_runtime_seconds double precision
        CHECK (max_runtime_seconds > 0 AND max_runtime_seconds <= 31622400),
    ADD COLUMN min_runtime_seconds double precision
        CHECK (min_runtime_seconds > 0 AND min_runtime_seconds <= 31622400);
