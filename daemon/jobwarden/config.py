"""Configuration: every environment variable jobwarden reads, each declared once.

A variable is one field of `Settings`, declared with `_variable(...)`: its name (the
field's `validation_alias`), its type and how its text is parsed (the `_Kind` in the
`Annotated` type), its default as an operator would write it, whether it is a secret,
and one line of help (the field's `description`). `VARIABLES` is read off those
fields, and `check-config` (`Settings.describe()`), the warning about unknown
`JOBWARDEN_*` variables and README's configuration table (`markdown_table()`, printed
by `python -m jobwarden.config`) all come from it.

`load_settings(environ)` returns one immutable `Settings` or raises `ConfigError`
listing every problem at once. The mapping passed in is the environment: no value
comes from `os.environ`, a `.env` file or pydantic-settings' own sources. A secret may
also come from `$CREDENTIALS_DIRECTORY/<NAME>` (systemd `LoadCredential=`); the
credential wins over the environment, with a warning. Problems and warnings name
variables, never a secret's value; secret text reaches pydantic only as a `Secret`.
"""

import base64
import binascii
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import EllipsisType, UnionType
from typing import Annotated, Any, Generic, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import Field, GetCoreSchemaHandler, ValidationError
from pydantic_core import ErrorDetails, core_schema
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from jobwarden.dsn import DatabaseUrl, DatabaseUrlError, parse_database_url
from jobwarden.durations import format_duration, parse_duration
from jobwarden.secret import Secret
from jobwarden.values import boolean, factor, growth, positive_duration, positive_int, rate

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "console", "logfmt", "json")
MAX_EMAIL_RECIPIENTS = 1000  # SendGrid's limit per message
MIN_API_TOKEN_LENGTH = 16
DLQ_JOB_PLACEHOLDER = "{jobId}"  # in JOBWARDEN_DLQ_RETRY_URL and routes: the entry's job
SEVERITIES_LOWER = ("info", "warning", "error", "critical")  # the web app's, least urgent first

_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\".]+$")
_NAMED_EMAIL = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>]+)>\s*$")
_API_TOKEN = re.compile(rf"[\x21-\x7e]{{{MIN_API_TOKEN_LENGTH},}}")  # fits a header


class ConfigError(Exception):
    """Configuration cannot be used; `problems` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class EmailAddress:
    email: str
    name: str | None = None

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class SystemdEnv:
    """What systemd tells a service through its environment."""

    notify_socket: str | None = None
    watchdog_usec: int | None = None  # only when WATCHDOG_PID is ours or unset
    journal_stream: tuple[int, int] | None = None  # (device, inode) of the journal stream


# --- How a variable's text becomes a value -------------------------------------------


@dataclass(frozen=True)
class _Kind(Generic[T]):
    """How a variable's text becomes its value, and how `check-config` prints the value.

    Used as `Annotated` metadata: pydantic validates the field with `parse` alone, so
    every problem message is jobwarden's own, and none of them quotes a secret.
    """

    parse: Callable[[str], T]
    show: Callable[[T], str] = str
    unset: T | None = None  # the value of an unset variable that has no default

    def validate(self, value: object) -> T | None:
        if value is None:
            return self.unset
        text = value.reveal() if isinstance(value, Secret) else value
        if not isinstance(text, str):
            raise ValueError(f"must be given as text, not {type(value).__name__}")
        return self.parse(text)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)


def _hidden(_: object) -> str:
    return "*** (set)"


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return text


def _secret_url(text: str) -> Secret:
    try:
        return Secret(_url(text))
    except ValueError:
        # The value is a secret: the message must not echo it.
        raise ValueError("must be an http:// or https:// URL with a host (value hidden)") from None


def _retry_url(text: str) -> Secret:
    """An http(s) URL that may hold `{jobId}`; a secret (it may embed credentials)."""
    _secret_url(text.replace(DLQ_JOB_PLACEHOLDER, "job"))  # its error never shows the value
    return Secret(text)


def _at_least_one_second(text: str) -> float:
    seconds = positive_duration(text)
    if seconds < 1:
        raise ValueError(f"must be at least 1s, not {format_duration(seconds)}")
    return seconds


def _database_url(text: str) -> Secret:
    try:
        parse_database_url(text)
    except DatabaseUrlError as exc:  # its messages never quote the URL
        raise ValueError(f"{exc} (value hidden)") from None
    return Secret(text)


def _redacted_database_url(url: Secret) -> str:
    return parse_database_url(url.reveal()).redacted()


def _webhook_secret(text: str) -> Secret:
    problem = "must be whsec_ followed by the base64 of 24 to 64 random bytes (value hidden)"
    if not text.startswith("whsec_"):
        raise ValueError(problem)
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(problem) from None
    if not 24 <= len(key) <= 64:
        raise ValueError(problem)
    return Secret(text)


def _api_token(text: str) -> Secret:
    if not _API_TOKEN.fullmatch(text):
        raise ValueError(
            f"must be at least {MIN_API_TOKEN_LENGTH} printable ASCII characters without spaces"
            " (value hidden)"
        )
    return Secret(text)


def _email(text: str) -> EmailAddress:
    named = _NAMED_EMAIL.match(text)
    name, email = (named["name"] or None, named["email"].strip()) if named else (None, text.strip())
    if not _EMAIL.match(email):
        raise ValueError(f"{email!r} is not an email address")
    if name and any(c in name for c in ";,"):
        raise ValueError(f"the name {name!r} may not contain ';' or ','")
    return EmailAddress(email=email, name=name)


def _recipients(text: str) -> tuple[EmailAddress, ...]:
    seen: dict[str, EmailAddress] = {}
    bad: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            address = _email(item)
        except ValueError:
            bad.append(repr(item))
            continue
        seen.setdefault(address.email.lower(), address)  # SendGrid rejects duplicates
    if bad:
        raise ValueError(f"not email addresses: {', '.join(bad)}")
    if not seen:
        raise ValueError("lists no address")
    if len(seen) > MAX_EMAIL_RECIPIENTS:
        raise ValueError(f"lists {len(seen)} addresses; at most {MAX_EMAIL_RECIPIENTS}")
    return tuple(seen.values())


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, not {text!r}")
        return value

    return parse


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be an integer, not {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {value}")
        return value

    return parse


def _number_shown(value: float) -> str:
    return f"{value:g}"


_DATABASE_URL = _Kind(_database_url, show=_redacted_database_url)
_SECRET_URL = _Kind(_secret_url, show=_hidden)
_WEBHOOK_SECRET = _Kind(_webhook_secret, show=_hidden)
_API_KEY = _Kind(Secret, show=_hidden)
_API_TOKEN_KIND = _Kind(_api_token, show=_hidden)
_EMAIL_ADDRESS = _Kind(_email)
_RECIPIENTS: _Kind[tuple[EmailAddress, ...]] = _Kind(
    _recipients, show=lambda addresses: ", ".join(map(str, addresses)), unset=()
)
_HTTP_URL = _Kind(_url)
_TEXT = _Kind(str)
_PATH = _Kind(lambda text: Path(text).expanduser())
_PORT = _Kind(_int_between(0, 65535))
_POOL_SIZE = _Kind(_int_between(1, 1000))
_COUNT = _Kind(positive_int)
_LOG_LEVEL = _Kind(_choice(LOG_LEVELS))
_LOG_FORMAT = _Kind(_choice(LOG_FORMATS))
_DURATION = _Kind(positive_duration, show=format_duration)
_DURATION_OR_ZERO = _Kind(parse_duration, show=format_duration)
_RATE = _Kind(rate, show=_number_shown)
_SEVERITY = _Kind(lambda text: _choice(SEVERITIES_LOWER)(text).upper())
_BOOLEAN = _Kind(boolean, show=lambda value: "true" if value else "false")
_FACTOR = _Kind(factor, show=_number_shown)
_GROWTH = _Kind(growth, show=_number_shown)
_CONCURRENCY = _Kind(_int_between(1, 1000))
_LEASE = _Kind(_at_least_one_second, show=format_duration)
_RETRY_URL = _Kind(_retry_url, show=_hidden)


def _variable(
    name: str,
    default: str | EllipsisType | None,
    meaning: str,
    *,
    secret: bool = False,
    default_text: str | None = None,
) -> Any:
    """Declare the environment variable `name` as the field this is assigned to.

    `default` is the text an operator would write (None: unset; `...`: load_settings
    supplies it); `default_text` replaces it in README's table when it needs words.
    """
    return Field(
        default,
        validation_alias=name,
        description=meaning,
        json_schema_extra={"secret": secret, "default_text": default_text},
    )


# --- The declarations ------------------------------------------------------------------


class Settings(BaseSettings):
    """Everything jobwarden is configured with: one field per environment variable,
    then what `load_settings` adds (`systemd`, `sources`, `warnings`)."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", case_sensitive=True)

    database_secret: Annotated[Secret | None, _DATABASE_URL] = _variable(
        "DATABASE_URL",
        None,
        "PostgreSQL URL. Prisma form works: `?schema=X` puts the shared tables in schema X"
        " (the search_path), `connection_limit=N` sizes the pool, `sslmode` is honoured,"
        " `pool_timeout`, `connect_timeout`, `socket_timeout`, `pgbouncer`,"
        " `application_name` are understood; other parameters are ignored with a debug line,"
        " never sent to the server.",
        secret=True,
        default_text="unset: embedded PostgreSQL",
    )
    direct_database_secret: Annotated[Secret | None, _DATABASE_URL] = _variable(
        "DIRECT_URL",
        None,
        "Prisma's direct (not PgBouncer) connection to the same database, in the same form as"
        " `DATABASE_URL`; when set, the leader lock and LISTEN use it. Needed to run"
        " several replicas when `DATABASE_URL` has `pgbouncer=true`.",
        secret=True,
    )
    alert_webhook_url: Annotated[Secret | None, _SECRET_URL] = _variable(
        "ALERT_WEBHOOK_URL",
        None,
        "Standard-Webhooks endpoint for alerts.",
        secret=True,
        default_text="unset (channel off)",
    )
    webhook_secret: Annotated[Secret | None, _WEBHOOK_SECRET] = _variable(
        "JOBWARDEN_WEBHOOK_SECRET",
        None,
        "`whsec_<base64 of 24 to 64 bytes>`, signs webhook deliveries.",
        secret=True,
        default_text="unset (unsigned)",
    )
    slack_webhook_url: Annotated[Secret | None, _SECRET_URL] = _variable(
        "SLACK_WEBHOOK_URL",
        None,
        "Slack incoming webhook.",
        secret=True,
        default_text="unset (channel off)",
    )
    sendgrid_api_key: Annotated[Secret | None, _API_KEY] = _variable(
        "SENDGRID_API_KEY",
        None,
        "SendGrid v3 API key.",
        secret=True,
        default_text="unset (email off)",
    )
    alert_email_from: Annotated[EmailAddress | None, _EMAIL_ADDRESS] = _variable(
        "ALERT_EMAIL_FROM",
        None,
        "sender: `ops@example.com` or `Jobwarden <ops@example.com>`",
        default_text="unset; required with the key",
    )
    alert_email_recipients: Annotated[tuple[EmailAddress, ...], _RECIPIENTS] = _variable(
        "ALERT_EMAIL_RECIPIENTS",
        None,
        f"comma-separated addresses (duplicates dropped, at most {MAX_EMAIL_RECIPIENTS})",
        default_text="unset; required with the key",
    )
    sendgrid_base_url: Annotated[str, _HTTP_URL] = _variable(
        "JOBWARDEN_SENDGRID_BASE_URL",
        "https://api.sendgrid.com",
        "EU accounts: `https://api.eu.sendgrid.com`",
    )
    sendgrid_sandbox: Annotated[bool, _BOOLEAN] = _variable(
        "JOBWARDEN_SENDGRID_SANDBOX",
        "false",
        "`true`: SendGrid validates each email without sending it (sandbox mode)",
    )
    slack_min_severity: Annotated[str, _SEVERITY] = _variable(
        "JOBWARDEN_SLACK_MIN_SEVERITY",
        "WARNING",
        "alerts below this severity (INFO < WARNING < ERROR < CRITICAL) are not sent to Slack",
    )
    webhook_min_severity: Annotated[str, _SEVERITY] = _variable(
        "JOBWARDEN_WEBHOOK_MIN_SEVERITY", "INFO", "the same for the webhook"
    )
    email_min_severity: Annotated[str, _SEVERITY] = _variable(
        "JOBWARDEN_EMAIL_MIN_SEVERITY", "ERROR", "the same for email"
    )
    alert_repeat_interval: Annotated[float, _DURATION_OR_ZERO] = _variable(
        "JOBWARDEN_ALERT_REPEAT_INTERVAL",
        "4h",
        "a CRITICAL or ERROR alert still open is announced again this often (`0`: never)",
    )
    delivery_max_age: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DELIVERY_MAX_AGE",
        "24h",
        "a notification not delivered by then is given up; an alert already older when"
        " jobwarden first sees it is not sent at all",
    )
    delivery_backoff_base: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DELIVERY_BACKOFF_BASE",
        "5s",
        "first wait before a failed notification is tried again; doubles with each try",
    )
    delivery_backoff_cap: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DELIVERY_BACKOFF_CAP",
        "10m",
        "longest wait between two tries of a notification (a server's Retry-After wins)",
    )
    digest_threshold: Annotated[int, _COUNT] = _variable(
        "JOBWARDEN_DIGEST_THRESHOLD",
        "10",
        "when more notifications than this wait for Slack or email, they go out as one digest",
    )
    db_down_alert_after: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DB_DOWN_ALERT_AFTER",
        "1m",
        "a running daemon that cannot reach the database this long tells the channels directly",
    )
    dlq_retry_url: Annotated[Secret | None, _RETRY_URL] = _variable(
        "JOBWARDEN_DLQ_RETRY_URL",
        None,
        "where a dead-letter entry is retried: `POST` of `{dlqId, jobId, attempt, eventData,"
        " error}`; `{jobId}` in it is replaced by the entry's job. Per-job routes"
        " (`jobwarden dlq route set`) and Python handlers override it.",
        secret=True,
        default_text="unset: only routed jobs are retried",
    )
    dlq_retry_token: Annotated[Secret | None, _API_KEY] = _variable(
        "JOBWARDEN_DLQ_RETRY_TOKEN",
        None,
        "sent as `Authorization: Bearer <token>` with every HTTP retry (routes included)",
        secret=True,
    )
    dlq_retry_timeout: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DLQ_RETRY_TIMEOUT", "30s", "total time of one retry (HTTP or Python handler)"
    )
    dlq_backoff_base: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DLQ_BACKOFF_BASE",
        "30s",
        "wait after an entry's first failed retry; multiplied by the factor after each one",
    )
    dlq_backoff_factor: Annotated[float, _GROWTH] = _variable(
        "JOBWARDEN_DLQ_BACKOFF_FACTOR", "2", "growth of the wait between retries, at least 1"
    )
    dlq_backoff_cap: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DLQ_BACKOFF_CAP",
        "1h",
        "longest wait between two retries of an entry (a longer `Retry-After` wins)",
    )
    dlq_max_attempts: Annotated[int, _COUNT] = _variable(
        "JOBWARDEN_DLQ_MAX_ATTEMPTS",
        "5",
        "retries of an entry before it is `FAILED` for good (`jobwarden dlq retry` grants as"
        " many again)",
    )
    dlq_concurrency: Annotated[int, _CONCURRENCY] = _variable(
        "JOBWARDEN_DLQ_CONCURRENCY", "8", "retries running at once in this daemon"
    )
    dlq_lease: Annotated[float, _LEASE] = _variable(
        "JOBWARDEN_DLQ_LEASE",
        "5m",
        "an entry left `PROCESSING` by a daemon that died is taken back after this (at least"
        " `1s`; renewed while its retry runs)",
    )
    dlq_backlog_threshold: Annotated[int, _COUNT] = _variable(
        "JOBWARDEN_DLQ_BACKLOG_THRESHOLD",
        "100",
        "more `PENDING` entries than this raise a `dlq_backlog` warning",
    )
    dlq_backlog_max_age: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DLQ_BACKLOG_MAX_AGE",
        "1h",
        "a `PENDING` entry older than this raises a `dlq_backlog` warning",
    )
    http_host: Annotated[str, _TEXT] = _variable(
        "JOBWARDEN_HTTP_HOST",
        "127.0.0.1",
        "address of the HTTP API; any but loopback (`127.0.0.0/8`, `::1`, `localhost`)"
        " requires `JOBWARDEN_API_TOKEN`",
    )
    http_port: Annotated[int, _PORT] = _variable(
        "JOBWARDEN_HTTP_PORT", "8787", "port of the HTTP API (`0`: any free port, logged)"
    )
    api_token: Annotated[Secret | None, _API_TOKEN_KIND] = _variable(
        "JOBWARDEN_API_TOKEN",
        None,
        "when set, writes under `/api` need `Authorization: Bearer <token>`;"
        f" at least {MIN_API_TOKEN_LENGTH} characters.",
        secret=True,
        default_text="unset; required off loopback",
    )
    log_level: Annotated[str, _LOG_LEVEL] = _variable(
        "JOBWARDEN_LOG_LEVEL", "info", ", ".join(f"`{level}`" for level in LOG_LEVELS)
    )
    log_format: Annotated[str, _LOG_FORMAT] = _variable(
        "JOBWARDEN_LOG_FORMAT",
        "auto",
        "`auto` (journal format under systemd, console on a terminal, logfmt otherwise),"
        " `console`, `logfmt`, `json`",
    )
    state_dir: Annotated[Path, _PATH] = _variable(
        "JOBWARDEN_STATE_DIR",
        ...,
        "where the embedded PostgreSQL keeps its data (`postgres/`), and an announced database"
        " outage until it is recorded (`outage.json`); must be writable",
        default_text="`$STATE_DIRECTORY`, else `~/.local/state/jobwarden`",
    )
    db_pool_size: Annotated[int, _POOL_SIZE] = _variable(
        "JOBWARDEN_DB_POOL_SIZE",
        "5",
        "maximum pooled connections; `connection_limit` in `DATABASE_URL` wins",
    )
    db_connect_timeout: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DB_CONNECT_TIMEOUT",
        "10s",
        "per connection attempt; `connect_timeout` in the URL wins",
    )
    db_retry_max_delay: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DB_RETRY_MAX_DELAY",
        "30s",
        "cap of the backoff while the database is unreachable at startup",
    )
    migration_lock_timeout: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_MIGRATION_LOCK_TIMEOUT",
        "5m",
        "how long to wait while another replica applies migrations",
    )
    shutdown_grace: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_SHUTDOWN_GRACE", "30s", "how long passes in flight may finish after SIGTERM"
    )
    http_client_timeout: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_HTTP_CLIENT_TIMEOUT", "20s", "total time of one outgoing HTTP attempt"
    )
    poll_interval: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_POLL_INTERVAL", "30s", "time between two monitoring passes over the jobs"
    )
    failure_threshold: Annotated[int, _COUNT] = _variable(
        "JOBWARDEN_FAILURE_THRESHOLD",
        "3",
        "consecutive failed runs that raise a job-failure alert (a job's expectation may"
        " override it)",
    )
    failure_rate: Annotated[float, _RATE] = _variable(
        "JOBWARDEN_FAILURE_RATE",
        "0.5",
        "share of failed runs within `JOBWARDEN_FAILURE_WINDOW` that raises a job-failure"
        " alert, above 0 and at most 1 (a job's expectation may override it)",
    )
    failure_window: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_FAILURE_WINDOW", "1h", "how far back the failure rate looks"
    )
    failure_min_executions: Annotated[int, _COUNT] = _variable(
        "JOBWARDEN_FAILURE_MIN_EXECUTIONS",
        "10",
        "runs the failure window needs before its failure rate counts",
    )
    default_grace: Annotated[float, _DURATION_OR_ZERO] = _variable(
        "JOBWARDEN_DEFAULT_GRACE",
        "5m",
        "how late a scheduled run may be before the job counts as missed (a job's expectation"
        " may override it)",
    )
    regression_factor: Annotated[float, _FACTOR] = _variable(
        "JOBWARDEN_REGRESSION_FACTOR",
        "1.5",
        "a job is slow when its average duration within `JOBWARDEN_REGRESSION_WINDOW` exceeds"
        " its baseline times this, which must be above 1 (a job's expectation may override it)",
    )
    regression_window: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_REGRESSION_WINDOW", "1h", "how far back a job's recent average duration looks"
    )
    regression_min_executions: Annotated[int, _COUNT] = _variable(
        "JOBWARDEN_REGRESSION_MIN_EXECUTIONS",
        "10",
        "runs the regression window needs before a slowdown counts",
    )
    resolve_after: Annotated[int, _COUNT] = _variable(
        "JOBWARDEN_RESOLVE_AFTER",
        "2",
        "consecutive healthy passes before an alert resolves itself",
    )
    baseline_window: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_BASELINE_WINDOW",
        "7d",
        "history a job's baseline (its usual duration) is computed from",
    )
    baseline_interval: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_BASELINE_INTERVAL", "1h", "how often baselines are computed again"
    )
    baseline_min_samples: Annotated[int, _COUNT] = _variable(
        "JOBWARDEN_BASELINE_MIN_SAMPLES",
        "20",
        "runs within the baseline window a job needs before it has a baseline",
    )
    history_retention: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_HISTORY_RETENTION",
        "30d",
        "how long the history of runs is kept; at least `JOBWARDEN_BASELINE_WINDOW` +"
        " `JOBWARDEN_REGRESSION_WINDOW`",
    )
    default_max_runtime: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_DEFAULT_MAX_RUNTIME",
        "1h",
        "how long a reported run may go without ending before it raises job_stuck (a job's"
        " expectation may override it: `jobs set --max-runtime`)",
    )
    run_retention: Annotated[float, _DURATION] = _variable(
        "JOBWARDEN_RUN_RETENTION",
        "30d",
        "how long reported runs are kept (whole days are dropped); at least"
        " `JOBWARDEN_BASELINE_WINDOW` + `JOBWARDEN_REGRESSION_WINDOW`",
    )

    systemd: SystemdEnv = SystemdEnv()
    sources: Mapping[str, str] = Field(default_factory=dict)  # variable -> environment|credential
    warnings: tuple[str, ...] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the keyword arguments: never os.environ, a .env file or a secrets dir.

        `load_settings` passes the values it read from the mapping it was given and
        from `$CREDENTIALS_DIRECTORY`, credentials first, because it must say where
        each value came from and warn when both were set.
        """
        return (init_settings,)

    @cached_property
    def database(self) -> DatabaseUrl | None:
        """DATABASE_URL taken apart; None: embedded PostgreSQL in `state_dir`."""
        return _parsed_url(self.database_secret)

    @cached_property
    def direct_database(self) -> DatabaseUrl | None:
        """DIRECT_URL taken apart: a connection that bypasses PgBouncer."""
        return _parsed_url(self.direct_database_secret)

    @property
    def effective_pool_size(self) -> int:
        """Prisma's `connection_limit` in DATABASE_URL wins over JOBWARDEN_DB_POOL_SIZE."""
        if self.database is not None and self.database.connection_limit is not None:
            return self.database.connection_limit
        return self.db_pool_size

    def secret_values(self) -> tuple[str, ...]:
        """Every secret string, for scrubbing log lines as a last line of defence."""
        values: list[str] = []
        for variable in VARIABLES:
            secret = getattr(self, variable.attribute) if variable.secret else None
            if isinstance(secret, Secret):
                values.append(secret.reveal())
        for url in (self.database, self.direct_database):
            if url is not None and url.password:
                values.append(url.password)
        return tuple(v for v in values if len(v) >= 4)

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, printable value, source) for `jobwarden check-config`."""
        rows: list[tuple[str, str, str]] = []
        url_limit = self.database.connection_limit if self.database is not None else None
        for variable in VARIABLES:
            value = getattr(self, variable.attribute)
            shown = "(unset)" if value is None or value == () else variable.kind.show(value)
            source = self.sources.get(variable.name, "default")
            if variable.name == "DATABASE_URL" and value is None:
                shown = f"(unset: embedded PostgreSQL in {self.state_dir / 'postgres'})"
            if variable.name == "JOBWARDEN_DB_POOL_SIZE" and url_limit is not None:
                shown, source = str(url_limit), "DATABASE_URL connection_limit"
            rows.append((variable.name, shown, source))
        return rows


def _parsed_url(url: Secret | None) -> DatabaseUrl | None:
    # Already validated by _database_url, so this cannot fail.
    return None if url is None else parse_database_url(url.reveal())


@dataclass(frozen=True)
class Variable:
    """One environment variable as `Settings` declares it."""

    name: str
    attribute: str  # of Settings
    default: str | None  # as an operator would write it; None: unset or computed
    secret: bool
    meaning: str
    default_text: str  # the default as README's table shows it
    kind: _Kind[Any]


def _declared_variables() -> tuple[Variable, ...]:
    variables: list[Variable] = []
    for attribute, info in Settings.model_fields.items():
        if not isinstance(info.validation_alias, str):
            continue  # systemd, sources, warnings: filled in by load_settings
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        secret = extra["secret"] is True
        holds_secret = info.annotation is Secret or (
            isinstance(info.annotation, UnionType) and Secret in get_args(info.annotation)
        )
        if secret != holds_secret:
            raise TypeError(f"{info.validation_alias}: a secret is held as a Secret, and only one")
        default = info.default if isinstance(info.default, str) else None
        shown = extra["default_text"]
        variables.append(
            Variable(
                name=info.validation_alias,
                attribute=attribute,
                default=default,
                secret=secret,
                meaning=info.description or "",
                default_text=shown
                if isinstance(shown, str)
                else ("unset" if default is None else f"`{default}`"),
                kind=next(m for m in info.metadata if isinstance(m, _Kind)),
            )
        )
    return tuple(variables)


VARIABLES = _declared_variables()
_BY_NAME = {variable.name: variable for variable in VARIABLES}
SECRET_VARIABLES = tuple(variable.name for variable in VARIABLES if variable.secret)
DEFAULTS: dict[str, str] = {variable.name: variable.default or "" for variable in VARIABLES}


def markdown_table() -> str:
    """README's configuration table, from the declarations."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for variable in VARIABLES:
        meaning = f"{variable.meaning} **Secret.**" if variable.secret else variable.meaning
        lines.append(f"| `{variable.name}` | {variable.default_text} | {meaning} |")
    return "\n".join(lines) + "\n"


# --- Loading ---------------------------------------------------------------------------


def systemd_env(environ: Mapping[str, str]) -> SystemdEnv:
    watchdog_usec: int | None = None
    pid = environ.get("WATCHDOG_PID")
    if environ.get("WATCHDOG_USEC", "").isdigit() and (pid is None or pid == str(os.getpid())):
        watchdog_usec = int(environ["WATCHDOG_USEC"]) or None
    journal: tuple[int, int] | None = None
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if device.isdigit() and inode.isdigit():
        journal = (int(device), int(inode))
    return SystemdEnv(
        notify_socket=environ.get("NOTIFY_SOCKET") or None,
        watchdog_usec=watchdog_usec,
        journal_stream=journal,
    )


def _default_state_dir(environ: Mapping[str, str]) -> Path:
    systemd_dirs = environ.get("STATE_DIRECTORY", "")
    if systemd_dirs:
        return Path(systemd_dirs.split(":")[0])
    return Path(environ.get("HOME") or Path.home()) / ".local" / "state" / "jobwarden"


@dataclass
class _Read:
    """The text of every declared variable that is set, and what reading it found."""

    values: dict[str, str | Secret]
    sources: dict[str, str]
    problems: list[str]
    warnings: list[str]


def _read(environ: Mapping[str, str]) -> _Read:
    """Each variable from its credential file, else from `environ`; empty counts as unset."""
    read = _Read({}, {}, [], [])
    directory = environ.get("CREDENTIALS_DIRECTORY")
    for variable in VARIABLES:
        name = variable.name
        text, source = environ.get(name, "").strip() or None, "environment"
        path = Path(directory) / name if directory and variable.secret else None
        if path is not None and path.exists():
            try:
                credential = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                read.problems.append(
                    f"{name}: cannot read credential file {path}: {type(exc).__name__}"
                )
                continue
            if credential:
                if text is not None:
                    read.warnings.append(
                        f"{name} is set both in the environment and as a credential; "
                        "using the credential"
                    )
                text, source = credential, "credential"
        if text is not None:
            read.values[name] = Secret(text) if variable.secret else text
            read.sources[name] = source
    return read


def _problem(error: ErrorDetails) -> str:
    """`VARIABLE: message`, from the message our parser wrote (never pydantic's input)."""
    name = ".".join(map(str, error["loc"])) or "configuration"
    cause = error.get("ctx", {}).get("error")
    return f"{name}: {cause if isinstance(cause, ValueError) else error['msg']}"


def _validate(values: Mapping[str, Any]) -> tuple[Settings, list[str], set[str]]:
    """The settings, a problem per invalid variable, and the names of those variables.

    With invalid variables, validate again without them (their defaults stand in), so
    the rules that combine variables can still be checked: every problem at once.
    """
    try:
        return Settings(**values), [], set()
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
    invalid = {str(error["loc"][0]) for error in errors if error["loc"]}
    settings = Settings(**{name: value for name, value in values.items() if name not in invalid})
    return settings, [_problem(error) for error in errors], invalid


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _combined(
    settings: Settings, given: set[str], invalid: set[str]
) -> tuple[list[str], list[str]]:
    """Problems and warnings of rules that combine variables; `given`: variables set."""
    problems: list[str] = []
    warnings: list[str] = []
    if "SENDGRID_API_KEY" in given:
        for name in ("ALERT_EMAIL_FROM", "ALERT_EMAIL_RECIPIENTS"):
            if name not in given:
                problems.append(f"{name}: required when SENDGRID_API_KEY is set")
    elif settings.alert_email_recipients:
        warnings.append("ALERT_EMAIL_RECIPIENTS is set but SENDGRID_API_KEY is not: email is off")
    if settings.webhook_secret is not None and settings.alert_webhook_url is None:
        warnings.append("JOBWARDEN_WEBHOOK_SECRET is set but ALERT_WEBHOOK_URL is not")
    if "JOBWARDEN_API_TOKEN" not in given and not _is_loopback(settings.http_host):
        problems.append(
            f"JOBWARDEN_API_TOKEN: required when JOBWARDEN_HTTP_HOST ({settings.http_host})"
            " is not a loopback address"
        )
    backoff = {"JOBWARDEN_DELIVERY_BACKOFF_BASE", "JOBWARDEN_DELIVERY_BACKOFF_CAP"}
    if not backoff & invalid and settings.delivery_backoff_cap < settings.delivery_backoff_base:
        problems.append(
            "JOBWARDEN_DELIVERY_BACKOFF_CAP: must be at least JOBWARDEN_DELIVERY_BACKOFF_BASE"
            f" ({format_duration(settings.delivery_backoff_base)})"
        )
    dlq_backoff = {"JOBWARDEN_DLQ_BACKOFF_BASE", "JOBWARDEN_DLQ_BACKOFF_CAP"}
    if not dlq_backoff & invalid and settings.dlq_backoff_cap < settings.dlq_backoff_base:
        problems.append(
            "JOBWARDEN_DLQ_BACKOFF_CAP: must be at least JOBWARDEN_DLQ_BACKOFF_BASE"
            f" ({format_duration(settings.dlq_backoff_base)})"
        )
    windows = {
        "JOBWARDEN_HISTORY_RETENTION",
        "JOBWARDEN_BASELINE_WINDOW",
        "JOBWARDEN_REGRESSION_WINDOW",
    }
    needed = settings.baseline_window + settings.regression_window
    for name, kept in (
        ("JOBWARDEN_HISTORY_RETENTION", settings.history_retention),
        ("JOBWARDEN_RUN_RETENTION", settings.run_retention),
    ):
        if not (windows | {name}) & invalid and kept < needed:
            problems.append(
                f"{name}: must be at least JOBWARDEN_BASELINE_WINDOW +"
                f" JOBWARDEN_REGRESSION_WINDOW ({format_duration(needed)}),"
                f" not {format_duration(kept)}"
            )
    return problems, warnings


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Parse and validate everything; raise ConfigError listing every problem."""
    read = _read(environ)
    values: dict[str, Any] = {
        **read.values,
        "systemd": systemd_env(environ),
        "sources": read.sources,
    }
    values.setdefault("JOBWARDEN_STATE_DIR", str(_default_state_dir(environ)))
    settings, problems, invalid = _validate(values)
    combined_problems, combined_warnings = _combined(settings, set(read.values), invalid)
    problems = read.problems + problems + combined_problems
    if problems:
        raise ConfigError(problems)
    warnings = read.warnings + combined_warnings
    for name in sorted(environ):
        if name.startswith("JOBWARDEN_") and name not in _BY_NAME:
            warnings.append(f"{name} is not a jobwarden setting and is ignored (a typo?)")
    return settings.model_copy(update={"warnings": tuple(warnings)})


if __name__ == "__main__":  # python -m jobwarden.config: README's table
    sys.stdout.write(markdown_table())
