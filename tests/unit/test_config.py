"""Configuration parsing: every problem at once, secrets never echoed, Prisma URLs."""

from pathlib import Path

import pytest

from jobwarden.config import ConfigError, load_settings
from jobwarden.dsn import parse_database_url, redact_url
from jobwarden.durations import parse_duration

SLACK = "https://hooks.slack.com/services/T000/B000/s3cr3tToken"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_defaults_without_any_variable() -> None:
    settings = load_settings({"HOME": "/home/ops"})
    assert settings.database is None
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8787)
    assert (settings.log_level, settings.log_format) == ("info", "auto")
    assert settings.state_dir == Path("/home/ops/.local/state/jobwarden")
    assert settings.db_retry_max_delay == 30


def test_state_directory_from_systemd_wins_over_home() -> None:
    settings = load_settings({"HOME": "/root", "STATE_DIRECTORY": "/var/lib/jobwarden:/x"})
    assert settings.state_dir == Path("/var/lib/jobwarden")


def test_every_problem_is_reported_at_once_without_echoing_secrets() -> None:
    env = {
        "DATABASE_URL": "mysql://admin:hunter2@db/app",
        "SLACK_WEBHOOK_URL": "not a url but secret-ish-value",
        "JOBWARDEN_WEBHOOK_SECRET": "whsec_tooShort",
        "SENDGRID_API_KEY": "SG.abcdef",
        "ALERT_EMAIL_RECIPIENTS": "ops@example.com, nobody@",
        "JOBWARDEN_HTTP_PORT": "-1",
        "JOBWARDEN_LOG_LEVEL": "loud",
        "JOBWARDEN_SHUTDOWN_GRACE": "-5s",
        "JOBWARDEN_DB_RETRY_MAX_DELAY": "soon",
    }
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    problems = raised.value.problems
    named = {p.split(":", 1)[0] for p in problems}
    assert named == {
        "DATABASE_URL",
        "SLACK_WEBHOOK_URL",
        "JOBWARDEN_WEBHOOK_SECRET",
        "ALERT_EMAIL_RECIPIENTS",
        "ALERT_EMAIL_FROM",
        "JOBWARDEN_HTTP_PORT",
        "JOBWARDEN_LOG_LEVEL",
        "JOBWARDEN_SHUTDOWN_GRACE",
        "JOBWARDEN_DB_RETRY_MAX_DELAY",
    }
    text = str(raised.value)
    for secret in ("hunter2", "secret-ish-value", "whsec_tooShort", "SG.abcdef"):
        assert secret not in text
    assert "'nobody@'" in text  # a recipient is not a secret: show which one is wrong
    assert "ALERT_EMAIL_FROM: required when SENDGRID_API_KEY is set" in problems


def test_email_settings_parse_names_and_drop_duplicate_recipients() -> None:
    settings = load_settings(
        {
            "SENDGRID_API_KEY": "SG.key",
            "ALERT_EMAIL_FROM": "Jobwarden <jobs@example.com>",
            "ALERT_EMAIL_RECIPIENTS": "ops@example.com, OPS@example.com,dev@example.org,",
        }
    )
    assert settings.alert_email_from is not None
    assert (settings.alert_email_from.name, settings.alert_email_from.email) == (
        "Jobwarden",
        "jobs@example.com",
    )
    assert [r.email for r in settings.alert_email_recipients] == [
        "ops@example.com",
        "dev@example.org",
    ]


def test_secrets_come_from_the_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "SLACK_WEBHOOK_URL").write_text(SLACK + "\n")
    (tmp_path / "JOBWARDEN_WEBHOOK_SECRET").write_text(WHSEC)
    settings = load_settings(
        {
            "CREDENTIALS_DIRECTORY": str(tmp_path),
            "SLACK_WEBHOOK_URL": "https://example.com/older",
            "ALERT_WEBHOOK_URL": "https://example.com/hook",
        }
    )
    assert settings.slack_webhook_url is not None
    assert settings.slack_webhook_url.reveal() == SLACK
    assert settings.sources["SLACK_WEBHOOK_URL"] == "credential"
    assert any("both in the environment and as a credential" in w for w in settings.warnings)


def test_printed_configuration_shows_no_secret() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://app:hunter2@db:5432/app?schema=web",
            "SLACK_WEBHOOK_URL": SLACK,
            "ALERT_WEBHOOK_URL": "https://example.com/hook?token=abc123",
            "JOBWARDEN_WEBHOOK_SECRET": WHSEC,
            "SENDGRID_API_KEY": "SG.sendgridkey",
            "ALERT_EMAIL_FROM": "jobs@example.com",
            "ALERT_EMAIL_RECIPIENTS": "ops@example.com",
        }
    )
    printed = "\n".join(f"{n} {v} {s}" for n, v, s in settings.describe())
    assert "postgresql://app:***@db:5432/app" in printed
    for secret in ("hunter2", "s3cr3tToken", "abc123", WHSEC, "SG.sendgridkey"):
        assert secret not in printed
        assert secret not in repr(settings)
    assert set(settings.secret_values()) >= {"hunter2", SLACK, WHSEC, "SG.sendgridkey"}


def test_a_misspelt_jobwarden_variable_is_warned_about() -> None:
    settings = load_settings({"JOBWARDEN_LOG_LEVLE": "debug"})
    assert any("JOBWARDEN_LOG_LEVLE" in w for w in settings.warnings)


def test_prisma_parameters_become_options_and_never_reach_the_server() -> None:
    url = parse_database_url(
        "postgresql://app:p%40ss@db.internal:6432/app?schema=web&connection_limit=7"
        "&pool_timeout=20&connect_timeout=5&socket_timeout=0&pgbouncer=true"
        "&sslmode=require&sslaccept=strict&application_name=webapp-jobs"
    )
    assert url.dsn == "postgresql://app:p%40ss@db.internal:6432/app?sslmode=require"
    assert (url.schema, url.connection_limit, url.pool_timeout, url.connect_timeout) == (
        "web",
        7,
        20.0,
        5.0,
    )
    assert url.socket_timeout is None  # Prisma: 0 means no timeout
    assert url.pgbouncer is True
    assert url.application_name == "webapp-jobs"
    assert url.ignored == ("sslaccept",)
    assert url.password == "p@ss"
    assert "p%40ss" not in url.redacted()


def test_connection_limit_wins_over_the_pool_size_variable() -> None:
    settings = load_settings(
        {"DATABASE_URL": "postgres://u@h/d?connection_limit=2", "JOBWARDEN_DB_POOL_SIZE": "9"}
    )
    assert settings.effective_pool_size == 2


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgres://u@h/d?connection_limit=0", "connection_limit must be a positive integer"),
        ("postgres://u@h/d?sslmode=sometimes", "sslmode must be one of"),
        ("postgres://u@h/d?pool_timeout=-1", "pool_timeout must not be negative"),
        ("postgres://u@h/d?pgbouncer=maybe", "pgbouncer must be true or false"),
    ],
)
def test_bad_prisma_parameters_are_named(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings({"DATABASE_URL": url})


def test_redact_url_hides_password_in_userinfo_and_query() -> None:
    assert redact_url("postgresql://u:pw@h/d?password=x&sslmode=require") == (
        "postgresql://u:***@h/d?password=***&sslmode=require"
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("12", 12)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1s", "soon", "5 minutes", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"negative|duration"):
        parse_duration(text)
