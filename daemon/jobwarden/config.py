"""Configuration: every environment variable jobwarden reads, parsed once.

`load_settings(environ)` returns one immutable `Settings` or raises `ConfigError`
listing every problem at once. Nothing else in the package reads the environment.
A secret may also come from `$CREDENTIALS_DIRECTORY/<NAME>` (systemd
`LoadCredential=`); the credential wins over the environment, with a warning.
Messages name variables, never their values when the value is a secret.
"""

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from jobwarden.dsn import DatabaseUrl, DatabaseUrlError, parse_database_url
from jobwarden.durations import format_duration, parse_duration
from jobwarden.secret import Secret

T = TypeVar("T")

SECRET_VARIABLES = (
    "DATABASE_URL",
    "ALERT_WEBHOOK_URL",
    "SLACK_WEBHOOK_URL",
    "SENDGRID_API_KEY",
    "JOBWARDEN_WEBHOOK_SECRET",
)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "console", "logfmt", "json")
MAX_EMAIL_RECIPIENTS = 1000  # SendGrid's limit per message

# Every JOBWARDEN_* variable and its default; used to catch typos too.
DEFAULTS: dict[str, str] = {
    "JOBWARDEN_HTTP_HOST": "127.0.0.1",
    "JOBWARDEN_HTTP_PORT": "8787",
    "JOBWARDEN_LOG_LEVEL": "info",
    "JOBWARDEN_LOG_FORMAT": "auto",
    "JOBWARDEN_STATE_DIR": "",  # $STATE_DIRECTORY, else ~/.local/state/jobwarden
    "JOBWARDEN_DB_POOL_SIZE": "5",
    "JOBWARDEN_DB_CONNECT_TIMEOUT": "10s",
    "JOBWARDEN_DB_RETRY_MAX_DELAY": "30s",
    "JOBWARDEN_MIGRATION_LOCK_TIMEOUT": "5m",
    "JOBWARDEN_SHUTDOWN_GRACE": "30s",
    "JOBWARDEN_HTTP_CLIENT_TIMEOUT": "20s",
    "JOBWARDEN_SENDGRID_BASE_URL": "https://api.sendgrid.com",
    "JOBWARDEN_WEBHOOK_SECRET": "",
}

_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\".]+$")
_NAMED_EMAIL = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>]+)>\s*$")


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


@dataclass(frozen=True)
class Settings:
    database: DatabaseUrl | None  # None: embedded PostgreSQL in state_dir
    database_secret: Secret | None
    alert_webhook_url: Secret | None
    webhook_secret: Secret | None
    slack_webhook_url: Secret | None
    sendgrid_api_key: Secret | None
    sendgrid_base_url: str
    alert_email_from: EmailAddress | None
    alert_email_recipients: tuple[EmailAddress, ...]
    http_host: str
    http_port: int
    log_level: str
    log_format: str
    state_dir: Path
    db_pool_size: int
    db_connect_timeout: float
    db_retry_max_delay: float
    migration_lock_timeout: float
    shutdown_grace: float
    http_client_timeout: float
    systemd: SystemdEnv = field(default_factory=SystemdEnv)
    sources: Mapping[str, str] = field(default_factory=dict)  # variable -> env|credential
    warnings: tuple[str, ...] = ()

    def secret_values(self) -> tuple[str, ...]:
        """Every secret string, for scrubbing log lines as a last line of defence."""
        values = [
            s.reveal()
            for s in (
                self.database_secret,
                self.alert_webhook_url,
                self.webhook_secret,
                self.slack_webhook_url,
                self.sendgrid_api_key,
            )
            if s is not None
        ]
        if self.database is not None and self.database.password:
            values.append(self.database.password)
        return tuple(v for v in values if len(v) >= 4)

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, printable value, source) for `jobwarden check-config`."""

        def shown(secret: Secret | None) -> str:
            return "(unset)" if secret is None else "*** (set)"

        database = (
            self.database.redacted()
            if self.database
            else f"(unset: embedded PostgreSQL in {self.state_dir / 'postgres'})"
        )
        rows = [
            ("DATABASE_URL", database),
            ("ALERT_WEBHOOK_URL", shown(self.alert_webhook_url)),
            ("JOBWARDEN_WEBHOOK_SECRET", shown(self.webhook_secret)),
            ("SLACK_WEBHOOK_URL", shown(self.slack_webhook_url)),
            ("SENDGRID_API_KEY", shown(self.sendgrid_api_key)),
            ("ALERT_EMAIL_FROM", str(self.alert_email_from or "(unset)")),
            (
                "ALERT_EMAIL_RECIPIENTS",
                ", ".join(map(str, self.alert_email_recipients)) or "(unset)",
            ),
            ("JOBWARDEN_SENDGRID_BASE_URL", self.sendgrid_base_url),
            ("JOBWARDEN_HTTP_HOST", self.http_host),
            ("JOBWARDEN_HTTP_PORT", str(self.http_port)),
            ("JOBWARDEN_LOG_LEVEL", self.log_level),
            ("JOBWARDEN_LOG_FORMAT", self.log_format),
            ("JOBWARDEN_STATE_DIR", str(self.state_dir)),
            ("JOBWARDEN_DB_POOL_SIZE", str(self.effective_pool_size)),
            ("JOBWARDEN_DB_CONNECT_TIMEOUT", format_duration(self.db_connect_timeout)),
            ("JOBWARDEN_DB_RETRY_MAX_DELAY", format_duration(self.db_retry_max_delay)),
            ("JOBWARDEN_MIGRATION_LOCK_TIMEOUT", format_duration(self.migration_lock_timeout)),
            ("JOBWARDEN_SHUTDOWN_GRACE", format_duration(self.shutdown_grace)),
            ("JOBWARDEN_HTTP_CLIENT_TIMEOUT", format_duration(self.http_client_timeout)),
        ]
        sources = dict(self.sources)
        if self.database is not None and self.database.connection_limit is not None:
            sources["JOBWARDEN_DB_POOL_SIZE"] = "DATABASE_URL connection_limit"
        return [(name, value, sources.get(name, "default")) for name, value in rows]

    @property
    def effective_pool_size(self) -> int:
        """Prisma's `connection_limit` in DATABASE_URL wins over JOBWARDEN_DB_POOL_SIZE."""
        if self.database is not None and self.database.connection_limit is not None:
            return self.database.connection_limit
        return self.db_pool_size


class _Reader:
    """Collects raw values and problems while `load_settings` walks the variables."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.sources: dict[str, str] = {}
        directory = environ.get("CREDENTIALS_DIRECTORY")
        self.credentials = Path(directory) if directory else None

    def raw(self, name: str) -> str | None:
        """The value of `name` (empty counts as unset), from a credential or the environment."""
        value = self.environ.get(name, "").strip() or None
        if value is not None:
            self.sources[name] = "environment"
        if name in SECRET_VARIABLES and self.credentials is not None:
            path = self.credentials / name
            if path.exists():
                try:
                    credential = path.read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    self.problems.append(
                        f"{name}: cannot read credential file {path}: {type(exc).__name__}"
                    )
                    return None
                if credential:
                    if value is not None:
                        self.warnings.append(
                            f"{name} is set both in the environment and as a credential; "
                            "using the credential"
                        )
                    self.sources[name] = "credential"
                    return credential
        return value

    def parsed(self, name: str, parse: Callable[[str], T], default: str | None = None) -> T | None:
        raw = self.raw(name)
        if raw is None:
            raw = default if default is not None else DEFAULTS.get(name) or None
        if raw is None:
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return None


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


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def _database(text: str) -> tuple[DatabaseUrl, Secret]:
    try:
        return parse_database_url(text), Secret(text)
    except DatabaseUrlError as exc:
        raise ValueError(f"{exc} (value hidden)") from None


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


def _state_dir(environ: Mapping[str, str], reader: _Reader) -> Path:
    explicit = reader.raw("JOBWARDEN_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    systemd_dirs = environ.get("STATE_DIRECTORY", "")
    if systemd_dirs:
        return Path(systemd_dirs.split(":")[0])
    return Path(environ.get("HOME") or Path.home()) / ".local" / "state" / "jobwarden"


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Parse and validate everything; raise ConfigError listing every problem."""
    r = _Reader(environ)
    database = r.parsed("DATABASE_URL", _database)
    sendgrid_api_key = r.parsed("SENDGRID_API_KEY", Secret)
    alert_email_from = r.parsed("ALERT_EMAIL_FROM", _email)
    recipients = r.parsed("ALERT_EMAIL_RECIPIENTS", _recipients)
    alert_webhook_url = r.parsed("ALERT_WEBHOOK_URL", _secret_url)
    webhook_secret = r.parsed("JOBWARDEN_WEBHOOK_SECRET", _webhook_secret)
    durations = {
        name: r.parsed(name, _positive_duration)
        for name in (
            "JOBWARDEN_DB_CONNECT_TIMEOUT",
            "JOBWARDEN_DB_RETRY_MAX_DELAY",
            "JOBWARDEN_MIGRATION_LOCK_TIMEOUT",
            "JOBWARDEN_SHUTDOWN_GRACE",
            "JOBWARDEN_HTTP_CLIENT_TIMEOUT",
        )
    }
    slack_webhook_url = r.parsed("SLACK_WEBHOOK_URL", _secret_url)
    sendgrid_base_url = r.parsed("JOBWARDEN_SENDGRID_BASE_URL", _url)
    http_host = r.parsed("JOBWARDEN_HTTP_HOST", str.strip)
    http_port = r.parsed("JOBWARDEN_HTTP_PORT", _int_between(0, 65535))
    log_level = r.parsed("JOBWARDEN_LOG_LEVEL", _choice(LOG_LEVELS))
    log_format = r.parsed("JOBWARDEN_LOG_FORMAT", _choice(LOG_FORMATS))
    db_pool_size = r.parsed("JOBWARDEN_DB_POOL_SIZE", _int_between(1, 1000))

    if sendgrid_api_key is not None:
        if alert_email_from is None and "ALERT_EMAIL_FROM" not in r.sources:
            r.problems.append("ALERT_EMAIL_FROM: required when SENDGRID_API_KEY is set")
        if recipients is None and "ALERT_EMAIL_RECIPIENTS" not in r.sources:
            r.problems.append("ALERT_EMAIL_RECIPIENTS: required when SENDGRID_API_KEY is set")
    elif recipients:
        r.warnings.append("ALERT_EMAIL_RECIPIENTS is set but SENDGRID_API_KEY is not: email is off")
    if webhook_secret is not None and alert_webhook_url is None:
        r.warnings.append("JOBWARDEN_WEBHOOK_SECRET is set but ALERT_WEBHOOK_URL is not")
    for name in sorted(environ):
        if name.startswith("JOBWARDEN_") and name not in DEFAULTS:
            r.warnings.append(f"{name} is not a jobwarden setting and is ignored (a typo?)")

    state_dir = _state_dir(environ, r)
    if r.problems:
        raise ConfigError(r.problems)
    return Settings(
        database=database[0] if database else None,
        database_secret=database[1] if database else None,
        alert_webhook_url=alert_webhook_url,
        webhook_secret=webhook_secret,
        sendgrid_api_key=sendgrid_api_key,
        alert_email_from=alert_email_from,
        alert_email_recipients=recipients or (),
        state_dir=state_dir,
        db_connect_timeout=_required(durations["JOBWARDEN_DB_CONNECT_TIMEOUT"]),
        db_retry_max_delay=_required(durations["JOBWARDEN_DB_RETRY_MAX_DELAY"]),
        migration_lock_timeout=_required(durations["JOBWARDEN_MIGRATION_LOCK_TIMEOUT"]),
        shutdown_grace=_required(durations["JOBWARDEN_SHUTDOWN_GRACE"]),
        http_client_timeout=_required(durations["JOBWARDEN_HTTP_CLIENT_TIMEOUT"]),
        systemd=systemd_env(environ),
        sources=dict(r.sources),
        warnings=tuple(r.warnings),
        slack_webhook_url=slack_webhook_url,
        sendgrid_base_url=_required(sendgrid_base_url),
        http_host=_required(http_host),
        http_port=_required(http_port),
        log_level=_required(log_level),
        log_format=_required(log_format),
        db_pool_size=_required(db_pool_size),
    )


def _required(value: T | None) -> T:
    # Only reached when no problem was recorded, so every defaulted value parsed.
    assert value is not None
    return value
