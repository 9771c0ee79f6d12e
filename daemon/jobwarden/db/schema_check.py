"""Startup check that the web app's shared tables have the columns jobwarden uses.

The tables belong to the web app; jobwarden never alters them, so when one was
changed on the web app's side jobwarden refuses to start and names exactly what
is missing or of another type, instead of failing later in the middle of a pass.
"""

from jobwarden.db.pg import Conn

# table -> column -> information_schema data_type, as the seed migration creates them
REQUIRED_COLUMNS: dict[str, dict[str, str]] = {
    "job_metrics": {
        "id": "text", "jobId": "text", "totalExecutions": "integer", "successCount": "integer",
        "failureCount": "integer", "totalDurationMs": "bigint", "minDurationMs": "integer",
        "maxDurationMs": "integer", "lastExecutionAt": "timestamp without time zone",
        "lastSuccessAt": "timestamp without time zone",
        "lastFailureAt": "timestamp without time zone", "metadata": "jsonb",
        "createdAt": "timestamp without time zone", "updatedAt": "timestamp without time zone",
    },
    "performance_baselines": {
        "id": "text", "jobId": "text", "baselineAvgMs": "double precision",
        "baselineP95Ms": "double precision", "sampleSize": "integer",
        "createdAt": "timestamp without time zone", "updatedAt": "timestamp without time zone",
    },
    "dead_letter_queue": {
        "id": "text", "jobId": "text", "eventData": "jsonb", "error": "text", "metadata": "jsonb",
        "status": "text", "attempts": "integer", "lastAttemptAt": "timestamp without time zone",
        "processedAt": "timestamp without time zone", "createdAt": "timestamp without time zone",
        "updatedAt": "timestamp without time zone",
    },
    "alerts": {
        "id": "text", "type": "text", "severity": "text", "title": "text", "message": "text",
        "metadata": "jsonb", "resolved": "boolean", "resolvedAt": "timestamp without time zone",
        "createdAt": "timestamp without time zone", "updatedAt": "timestamp without time zone",
    },
}  # fmt: skip


class SchemaMismatch(Exception):
    """The shared tables lack what jobwarden needs; `problems` names each gap."""

    def __init__(self, schema: str, problems: list[str]) -> None:
        super().__init__(
            f"the shared tables in schema {schema!r} are not as jobwarden expects:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
        self.problems = problems


async def verify_shared_tables(conn: Conn) -> None:
    """Raise SchemaMismatch naming every missing table, missing column and wrong type."""
    schema = await conn.fetchval("SELECT current_schema()")
    if schema is None:
        raise SchemaMismatch("(none)", ["no schema on the search_path exists"])
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = ANY($2::text[])",
        schema,
        list(REQUIRED_COLUMNS),
    )
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        found.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]

    problems: list[str] = []
    for table, columns in REQUIRED_COLUMNS.items():
        present = found.get(table)
        if present is None:
            problems.append(f"table {table} is missing")
            continue
        missing = [c for c in columns if c not in present]
        if missing:
            problems.append(
                f"table {table} is missing column(s) " + ", ".join(f'"{c}"' for c in missing)
            )
        problems += [
            f'column {table}."{c}" is {present[c]}, expected {t}'
            for c, t in columns.items()
            if c in present and present[c] != t
        ]
    if problems:
        raise SchemaMismatch(schema, problems)
