"""DATABASE_URL as the web app writes it, Prisma parameters included.

Prisma accepts parameters that are not libpq's (`schema`, `connection_limit`,
`pool_timeout`, `pgbouncer`, …). asyncpg would forward every parameter it does not
know to the server as a run-time setting, and the server would refuse the
connection, so the URL is taken apart here: libpq parameters stay in the DSN handed
to asyncpg, Prisma's become options, anything else is dropped and named in a debug
line. Nothing from the query string is ever sent to the server as a setting.
"""

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from jobwarden.secret import REDACTED

# libpq parameters that asyncpg understands itself (not forwarded as settings).
_LIBPQ_PARAMS = frozenset(
    {
        "host", "port", "dbname", "database", "user", "password", "passfile",
        "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword",
        "ssl_min_protocol_version", "ssl_max_protocol_version",
        "target_session_attrs", "krbsrvname", "gsslib",
    }
)  # fmt: skip
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class DatabaseUrlError(ValueError):
    """The URL cannot be used; `problems` says why, without echoing the URL."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DatabaseUrl:
    dsn: str = field(repr=False)  # for asyncpg: libpq parameters only; holds the password
    schema: str | None  # Prisma `schema`: where the shared tables live
    connection_limit: int | None  # Prisma `connection_limit`: pool size
    connect_timeout: float | None  # seconds
    pool_timeout: float | None  # seconds to wait for a free pooled connection
    socket_timeout: float | None  # seconds; becomes the per-query timeout
    pgbouncer: bool  # transaction pooling: no prepared-statement cache
    application_name: str | None
    ignored: tuple[str, ...]  # names of parameters dropped (never values)
    password: str | None = field(repr=False)

    def redacted(self) -> str:
        """The DSN with its password replaced by `***`: safe to print."""
        return redact_url(self.dsn)


def redact_url(url: str) -> str:
    """Replace the password of a URL (and any `password` parameter) with `***`."""
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{hostinfo}"
    query = urlencode(
        [(k, REDACTED if k in ("password", "sslpassword") else v) for k, v in _pairs(parts.query)],
        safe="/*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _pairs(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _seconds(name: str, value: str, problems: list[str]) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        problems.append(f"parameter {name} must be a number of seconds")
        return None
    if seconds < 0:
        problems.append(f"parameter {name} must not be negative")
        return None
    return seconds or None  # Prisma: 0 means no timeout


def parse_database_url(url: str) -> DatabaseUrl:
    problems: list[str] = []
    parts = urlsplit(url.strip())
    if parts.scheme not in ("postgres", "postgresql"):
        raise DatabaseUrlError(["must start with postgresql:// or postgres://"])
    userinfo, at, _ = parts.netloc.rpartition("@")
    password = unquote(userinfo.split(":", 1)[1]) if at and ":" in userinfo else None

    kept: list[tuple[str, str]] = []
    ignored: list[str] = []
    options: dict[str, str] = {}
    for key, value in _pairs(parts.query):
        if key in _LIBPQ_PARAMS:
            kept.append((key, value))
            if key == "password":
                password = value
        elif key in {"schema", "connection_limit", "pool_timeout", "connect_timeout",
                     "socket_timeout", "pgbouncer", "application_name"}:  # fmt: skip
            options[key] = value
        else:
            ignored.append(key)

    sslmode = dict(kept).get("sslmode")
    if sslmode is not None and sslmode not in _SSLMODES:
        problems.append(f"parameter sslmode must be one of {', '.join(_SSLMODES)}")

    connection_limit: int | None = None
    if "connection_limit" in options:
        raw = options["connection_limit"]
        if not raw.isdigit() or int(raw) < 1:
            problems.append("parameter connection_limit must be a positive integer")
        else:
            connection_limit = int(raw)

    pgbouncer = options.get("pgbouncer", "false").lower()
    if pgbouncer not in ("true", "false"):
        problems.append("parameter pgbouncer must be true or false")

    schema = options.get("schema") or None
    timeouts = {
        name: _seconds(name, options[name], problems) if name in options else None
        for name in ("connect_timeout", "pool_timeout", "socket_timeout")
    }
    if problems:
        raise DatabaseUrlError(problems)

    dsn = urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urlencode(kept, quote_via=quote, safe="/"), "")
    )
    return DatabaseUrl(
        dsn=dsn,
        schema=schema,
        connection_limit=connection_limit,
        connect_timeout=timeouts["connect_timeout"],
        pool_timeout=timeouts["pool_timeout"],
        socket_timeout=timeouts["socket_timeout"],
        pgbouncer=pgbouncer == "true",
        application_name=options.get("application_name") or None,
        ignored=tuple(ignored),
        password=password,
    )
