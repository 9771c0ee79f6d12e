"""Small PostgreSQL helpers shared by the modules that talk to the database."""

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection straight from asyncpg.connect() or one lent by the pool. The stubs
# make both generic over the record type; the runtime classes are not subscriptable.
if TYPE_CHECKING:
    Conn: TypeAlias = asyncpg.Connection[Any] | PoolConnectionProxy[Any]
else:
    Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# What a failed query or connection raises; health checks report these as "error".
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


def affected(status: str) -> int:
    """Rows a statement touched, from its command tag (`UPDATE 3`, `INSERT 0 5`)."""
    return int(status.split()[-1])


def storable(text: str | None) -> str | None:
    """Text PostgreSQL accepts: what a remote service says may hold a NUL or a lone
    surrogate, which `text` refuses."""
    if text is None:
        return None
    return text.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (schema or database name) for interpolation into DDL."""
    return '"' + name.replace('"', '""') + '"'


# Server-side keepalives for the long-lived connections of their own (leader lock,
# LISTEN): a peer cut off by the network is noticed within seconds, not hours.
TCP_KEEPALIVES = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
                  "tcp_keepalives_count": "3"}  # fmt: skip
