"""What the long-running services (the delivery dispatcher, the DLQ processor) share.

- `default_owner()`: who holds a claim: host, process, and a random tag (a restarted
  process with the same pid is someone else).
- `clock(now)`: the time to act at; tests pass any fixed `now`, None reads the clock.
- `RETRY_RECORDING`: database errors after which writing the same outcomes again can
  succeed (the database is away or busy), rather than never.
- `loop_failure_delay(...)`: how long a service loop waits after one of its turns
  failed, logged once per run of database errors and every time for anything else.
"""

import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from jobwarden.db.pg import DATABASE_ERRORS

Clock = Callable[[], datetime]

RETRY_RECORDING: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def now() -> datetime:
    return datetime.now(UTC)


def clock(moment: datetime | None) -> Clock:
    """`moment` every time it is asked, or the real time when it is None."""
    if moment is None:
        return now
    return lambda: moment


def loop_failure_delay(
    log: structlog.stdlib.BoundLogger, errors: int, doing: str, exc: Exception
) -> float:
    """Seconds before the next turn after `errors` failed turns in a row (0.5 s doubling,
    at most 30 s), logged: every error that is not the database's with its traceback,
    the database's once per run of them."""
    delay = min(30.0, 0.5 * 2.0 ** min(errors - 1, 6))
    if not isinstance(exc, DATABASE_ERRORS):
        log.error(f"error while {doing}; will retry", retry_in_s=delay, exc_info=exc)
    elif errors == 1:
        log.warning(
            f"database error while {doing}; will retry",
            error=f"{type(exc).__name__}: {exc}",
            retry_in_s=delay,
        )
    return delay
