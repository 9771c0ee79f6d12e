-- jobwarden 0001: its own schema, and the web app's four monitoring tables.
--
-- The four tables are the web app's (Prisma) and must stay exactly as its
-- migration creates them: same names, types, nullability, defaults and index
-- names. They are created here only where they are missing; an existing table
-- or index is left untouched. Never add a column, index, default or constraint
-- to them: Prisma Migrate would report it as drift and propose to drop it.
-- jobwarden's own state lives in schema "jobwarden".

CREATE SCHEMA IF NOT EXISTS jobwarden;

CREATE TABLE IF NOT EXISTS "job_metrics" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "jobId" TEXT NOT NULL,
    "totalExecutions" INTEGER NOT NULL DEFAULT 0,
    "successCount" INTEGER NOT NULL DEFAULT 0,
    "failureCount" INTEGER NOT NULL DEFAULT 0,
    "totalDurationMs" BIGINT NOT NULL DEFAULT 0,
    "minDurationMs" INTEGER NOT NULL DEFAULT 0,
    "maxDurationMs" INTEGER NOT NULL DEFAULT 0,
    "lastExecutionAt" TIMESTAMP(3),
    "lastSuccessAt" TIMESTAMP(3),
    "lastFailureAt" TIMESTAMP(3),
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL
);

CREATE TABLE IF NOT EXISTS "performance_baselines" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "jobId" TEXT NOT NULL,
    "baselineAvgMs" DOUBLE PRECISION NOT NULL,
    "baselineP95Ms" DOUBLE PRECISION NOT NULL,
    "sampleSize" INTEGER NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL
);

CREATE TABLE IF NOT EXISTS "dead_letter_queue" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "jobId" TEXT NOT NULL,
    "eventData" JSONB NOT NULL,
    "error" TEXT NOT NULL,
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "status" TEXT NOT NULL DEFAULT 'PENDING',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "lastAttemptAt" TIMESTAMP(3),
    "processedAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL
);

CREATE TABLE IF NOT EXISTS "alerts" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "type" TEXT NOT NULL,
    "severity" TEXT NOT NULL,
    "title" TEXT NOT NULL,
    "message" TEXT NOT NULL,
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "resolved" BOOLEAN NOT NULL DEFAULT false,
    "resolvedAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS "job_metrics_jobId_key" ON "job_metrics"("jobId");
CREATE INDEX IF NOT EXISTS "job_metrics_jobId_idx" ON "job_metrics"("jobId");
CREATE INDEX IF NOT EXISTS "job_metrics_lastExecutionAt_idx" ON "job_metrics"("lastExecutionAt");

CREATE UNIQUE INDEX IF NOT EXISTS "performance_baselines_jobId_key" ON "performance_baselines"("jobId");
CREATE INDEX IF NOT EXISTS "performance_baselines_jobId_idx" ON "performance_baselines"("jobId");

CREATE INDEX IF NOT EXISTS "dead_letter_queue_jobId_idx" ON "dead_letter_queue"("jobId");
CREATE INDEX IF NOT EXISTS "dead_letter_queue_status_idx" ON "dead_letter_queue"("status");
CREATE INDEX IF NOT EXISTS "dead_letter_queue_createdAt_idx" ON "dead_letter_queue"("createdAt");

CREATE INDEX IF NOT EXISTS "alerts_type_idx" ON "alerts"("type");
CREATE INDEX IF NOT EXISTS "alerts_severity_idx" ON "alerts"("severity");
CREATE INDEX IF NOT EXISTS "alerts_resolved_idx" ON "alerts"("resolved");
CREATE INDEX IF NOT EXISTS "alerts_createdAt_idx" ON "alerts"("createdAt");
