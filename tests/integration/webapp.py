"""The web app's side of the shared tables, as its job runner and Prisma write them."""

import json
import uuid
from datetime import datetime
from typing import Any

from jobwarden.db.pg import Conn
from jobwarden.db.prisma import to_prisma

# What the runner's `prisma.jobMetrics.upsert` does after each execution.
RECORD_RUN = """
INSERT INTO job_metrics AS m (id, "jobId", "totalExecutions", "successCount", "failureCount",
    "totalDurationMs", "minDurationMs", "maxDurationMs", "lastExecutionAt", "lastSuccessAt",
    "lastFailureAt", "updatedAt")
VALUES ($1, $2, 1, $3::int, 1 - $3::int, $4::int, $4::int, $4::int, $5::timestamp,
        CASE WHEN $3::int = 1 THEN $5::timestamp END,
        CASE WHEN $3::int = 0 THEN $5::timestamp END, $5::timestamp)
ON CONFLICT ("jobId") DO UPDATE SET
    "totalExecutions" = m."totalExecutions" + 1,
    "successCount" = m."successCount" + $3::int,
    "failureCount" = m."failureCount" + 1 - $3::int,
    "totalDurationMs" = m."totalDurationMs" + $4,
    "minDurationMs" = least(m."minDurationMs", $4),
    "maxDurationMs" = greatest(m."maxDurationMs", $4),
    "lastExecutionAt" = $5::timestamp,
    "lastSuccessAt" = CASE WHEN $3::int = 1 THEN $5::timestamp ELSE m."lastSuccessAt" END,
    "lastFailureAt" = CASE WHEN $3::int = 0 THEN $5::timestamp ELSE m."lastFailureAt" END,
    "updatedAt" = $5::timestamp
"""


async def record_run(
    conn: Conn, job_id: str, at: datetime, *, ok: bool = True, duration_ms: int = 100
) -> None:
    await conn.execute(
        RECORD_RUN, f"c{uuid.uuid4().hex[:24]}", job_id, int(ok), duration_ms, to_prisma(at)
    )


async def record_runs(
    conn: Conn, job_id: str, at: datetime, count: int, *, ok: bool = True, duration_ms: int = 100
) -> None:
    for _ in range(count):
        await record_run(conn, job_id, at, ok=ok, duration_ms=duration_ms)


async def alerts(conn: Conn, **where: Any) -> list[dict[str, Any]]:
    """Rows of the shared alerts table, oldest first; `type="job_failure"` filters."""
    rows = await conn.fetch('SELECT * FROM alerts ORDER BY "createdAt", id')
    found = [dict(row) for row in rows]
    return [row for row in found if all(row[k] == v for k, v in where.items())]


async def open_alerts(conn: Conn) -> list[dict[str, Any]]:
    return [row for row in await alerts(conn) if not row["resolved"]]


async def insert_alert(
    conn: Conn,
    *,
    severity: str = "ERROR",
    title: str = "Nightly export failed",
    message: str = "exit status 1",
    type: str = "job_failure",
    metadata: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> str:
    """What the web app's `prisma.alert.create` does: only the required columns set,
    unless `metadata` or `created_at` are given. Returns the new alert's id."""
    alert_id = f"c{uuid.uuid4().hex[:24]}"
    if metadata is None and created_at is None:
        await conn.execute(
            "INSERT INTO alerts (id, type, severity, title, message, \"updatedAt\")"
            " VALUES ($1, $2, $3, $4, $5, now() AT TIME ZONE 'UTC')",
            alert_id, type, severity, title, message,
        )  # fmt: skip
        return alert_id
    stamp = to_prisma(created_at) if created_at is not None else None
    await conn.execute(
        "INSERT INTO alerts (id, type, severity, title, message, metadata, \"createdAt\","
        " \"updatedAt\") VALUES ($1, $2, $3, $4, $5, $6::jsonb,"
        " coalesce($7, now() AT TIME ZONE 'UTC'), coalesce($7, now() AT TIME ZONE 'UTC'))",
        alert_id, type, severity, title, message, metadata or {}, stamp,
    )  # fmt: skip
    return alert_id


async def resolve_alert(conn: Conn, alert_id: str) -> None:
    """What the web app's `prisma.alert.update({resolved: true, resolvedAt: now})` does."""
    await conn.execute(
        "UPDATE alerts SET resolved = true, \"resolvedAt\" = now() AT TIME ZONE 'UTC',"
        " \"updatedAt\" = now() AT TIME ZONE 'UTC' WHERE id = $1",
        alert_id,
    )


async def drop_jobwarden_triggers(conn: Conn) -> None:
    """As if jobwarden's triggers on alerts were never installed, or dropped by hand."""
    await conn.execute("DROP TRIGGER jobwarden_alerts_inserted ON alerts")
    await conn.execute("DROP TRIGGER jobwarden_alerts_updated ON alerts")


async def insert_dlq_entry(
    conn: Conn,
    job_id: str = "send-invoice",
    *,
    event_data: Any = None,
    error: str = "SMTP 421: try again later",
    metadata: dict[str, Any] | None = None,
) -> str:
    """What the web app's `prisma.deadLetterQueue.create` does: only the required columns
    (`id`, `jobId`, `eventData`, `error`, `updatedAt`), unless `metadata` is given: status
    PENDING and attempts 0 are the table's defaults. Returns the new entry's id."""
    entry_id = f"c{uuid.uuid4().hex[:24]}"
    data = {"invoiceId": 42} if event_data is None else event_data
    if metadata is None:
        await conn.execute(
            'INSERT INTO dead_letter_queue (id, "jobId", "eventData", error, "updatedAt")'
            " VALUES ($1, $2, $3::text::jsonb, $4, now() AT TIME ZONE 'UTC')",
            entry_id, job_id, json.dumps(data), error,
        )  # fmt: skip
    else:
        await conn.execute(
            'INSERT INTO dead_letter_queue (id, "jobId", "eventData", error, metadata,'
            " \"updatedAt\") VALUES ($1, $2, $3::text::jsonb, $4, $5::text::jsonb,"
            " now() AT TIME ZONE 'UTC')",
            entry_id, job_id, json.dumps(data), error, json.dumps(metadata),
        )  # fmt: skip
    return entry_id


async def insert_dlq_entries(conn: Conn, count: int, job_id: str = "send-invoice") -> list[str]:
    """`count` entries in one statement, as a `createMany` writes them."""
    ids = [f"c{uuid.uuid4().hex[:24]}" for _ in range(count)]
    await conn.execute(
        'INSERT INTO dead_letter_queue (id, "jobId", "eventData", error, "updatedAt")'
        " SELECT i, $2, jsonb_build_object('n', n), 'failed', now() AT TIME ZONE 'UTC'"
        " FROM unnest($1::text[]) WITH ORDINALITY AS t(i, n)",
        ids, job_id,
    )  # fmt: skip
    return ids


async def dlq_entry(conn: Conn, entry_id: str) -> dict[str, Any]:
    """The entry's row as the web app reads it (metadata and eventData decoded)."""
    row = await conn.fetchrow("SELECT * FROM dead_letter_queue WHERE id = $1", entry_id)
    assert row is not None, entry_id
    entry = dict(row)
    for name in ("metadata", "eventData"):  # a bare connection has no JSON codec
        if isinstance(entry[name], str):
            entry[name] = json.loads(entry[name])
    return entry


def dlq_history(entry: dict[str, Any]) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = entry["metadata"].get("jobwarden", {}).get("history", [])
    return history
