"""Per-job retry routes (`jobwarden dlq route ...`, `/api/dlq/routes`).

A route sends one job's dead-letter entries to a URL of its own, overriding a Python
handler and the default `JOBWARDEN_DLQ_RETRY_URL` (see `handlers`). Routes live in
`jobwarden.dlq_routes` and take effect at the next claim: setting one wakes the
processors, since entries of a job that had no handler may now be retried.

A URL may carry credentials (`https://user:pass@host/...`, `?token=...`): it is stored
as given and only ever shown through `redact_url`. No message here quotes a URL.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from jobwarden.alerts.notification import iso_utc
from jobwarden.config import DLQ_JOB_PLACEHOLDER
from jobwarden.db.pg import Conn
from jobwarden.dlq.queue import NOTIFY_CHANNEL

MAX_JOB_ID_LENGTH = 200
MAX_URL_LENGTH = 2000
REDACTED = "***"

SET_ROUTE = """
INSERT INTO jobwarden.dlq_routes AS r (job_id, url, created_at, updated_at)
VALUES ($1, $2, $3, $3)
ON CONFLICT (job_id) DO UPDATE SET url = excluded.url, updated_at = excluded.updated_at
RETURNING (xmax = 0) AS created
"""

UNSET_ROUTE = "DELETE FROM jobwarden.dlq_routes WHERE job_id = $1 RETURNING job_id"

LIST_ROUTES = """
SELECT job_id, url, created_at, updated_at FROM jobwarden.dlq_routes ORDER BY job_id
"""

NOTIFY = "SELECT pg_notify($1, '')"


class InvalidInput(ValueError):
    """A value an operator gave that cannot be used; `field` names it (`job`, `url`,
    `reason`, `status`), and the message never quotes a URL."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RouteSet:
    job_id: str
    url: str  # redacted
    created: bool  # False: an existing route was changed


def check_job_id(job_id: str, field: str = "job") -> str:
    """A job id as the web app writes `jobId`: not blank, printable, at most 200 chars."""
    if not job_id.strip():
        raise InvalidInput(field, "must not be empty")
    if len(job_id) > MAX_JOB_ID_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in job_id):
        raise InvalidInput(field, f"must be at most {MAX_JOB_ID_LENGTH} printable characters")
    return job_id


def check_url(url: str, field: str = "url") -> str:
    """An http(s) URL with a host; `{jobId}` may stand anywhere for the entry's job (no
    other braces: a misspelt placeholder would be sent as it is). The value is a secret:
    no message quotes it."""
    problem = "must be an http:// or https:// URL with a host (value hidden)"
    text = url.strip()
    if not text or len(text) > MAX_URL_LENGTH:
        raise InvalidInput(field, f"{problem}, at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in text):
        raise InvalidInput(field, "must not contain spaces or control characters (value hidden)")
    plain = text.replace(DLQ_JOB_PLACEHOLDER, "job")
    if "{" in plain or "}" in plain:
        raise InvalidInput(field, f"only {DLQ_JOB_PLACEHOLDER} may stand in braces (value hidden)")
    try:
        parts = urlsplit(plain)
        parts.port  # noqa: B018  raises ValueError for a port out of range
    except ValueError:
        raise InvalidInput(field, problem) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInput(field, problem)
    return text


def redact_url(url: str) -> str:
    """`scheme://host[:port]/***`: only the origin. Credentials, the path and the query
    are hidden (a webhook-style URL carries its secret in the path), a fragment dropped.
    What every listing shows of a route."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return REDACTED
    host = parts.netloc.rpartition("@")[2]
    if not parts.scheme or not host:
        return REDACTED
    rest = f"/{REDACTED}" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{rest}"


async def set_route(conn: Conn, job_id: str, url: str, now: datetime) -> RouteSet:
    """Route `job_id`'s entries to `url` (validated here too); wakes the processors."""
    job_id, url = check_job_id(job_id), check_url(url)
    async with conn.transaction():
        created: bool = await conn.fetchval(SET_ROUTE, job_id, url, now)
        await conn.execute(NOTIFY, NOTIFY_CHANNEL)
    return RouteSet(job_id, redact_url(url), created)


async def unset_route(conn: Conn, job_id: str) -> bool:
    """Forget the job's route; False when it had none."""
    return await conn.fetchval(UNSET_ROUTE, job_id) is not None


async def list_routes(conn: Conn) -> list[dict[str, Any]]:
    """Every route, by job: `jobId`, `url` (redacted), `createdAt`, `updatedAt`."""
    return [
        {
            "jobId": row["job_id"],
            "url": redact_url(row["url"]),
            "createdAt": iso_utc(row["created_at"]),
            "updatedAt": iso_utc(row["updated_at"]),
        }
        for row in await conn.fetch(LIST_ROUTES)
    ]


def routing_table(
    routes: Iterable[Mapping[str, Any]], python_jobs: Iterable[str], *, default_url: bool
) -> dict[str, Any]:
    """Where each job's entries go, as `route list` shows it: every route (`source`
    `"route"`, its redacted `url`) and every installed Python handler (`source`
    `"python"`), by job; `inEffect` is false for a Python handler a route overrides.
    `defaultUrl` says whether JOBWARDEN_DLQ_RETRY_URL is set (never its value): when it
    is not, jobs listed nowhere here are not retried."""
    rows: list[dict[str, Any]] = [
        {**route, "source": "route", "inEffect": True} for route in routes
    ]
    routed = {row["jobId"] for row in rows}
    for job in sorted(set(python_jobs)):
        rows.append({"jobId": job, "source": "python", "inEffect": job not in routed})
    rows.sort(key=lambda row: (row["jobId"], row["source"] != "route"))
    return {"routes": rows, "defaultUrl": default_url}
