"""Configuration parsing: every problem at once, secrets never echoed, Prisma URLs."""

from pathlib import Path

import pytest

from jobwarden.config import VARIABLES, ConfigError, load_settings
from jobwarden.dsn import parse_database_url, redact_url
from jobwarden.durations import format_duration, parse_duration

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
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), ("12", 12)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1s", "soon", "5 minutes", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"negative|duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (45, "45s"), (300, "5m"), (3600, "1h"), (90000, "25h"), (2592000, "30d")],
)
def test_durations_print_in_the_largest_whole_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


TOKEN = "tok_9f2c4e8a1b7d3c6e5f0a"
ANY_ADDRESS = "0.0.0.0"  # noqa: S104  (the tests bind nothing)


def test_monitoring_knobs_and_new_secrets_have_their_documented_defaults() -> None:
    settings = load_settings({"HOME": "/home/ops"})
    assert settings.poll_interval == 30
    assert (settings.failure_threshold, settings.failure_rate) == (3, 0.5)
    assert (settings.failure_window, settings.failure_min_executions) == (3600, 10)
    assert settings.default_grace == 300
    assert (settings.regression_factor, settings.regression_window) == (1.5, 3600)
    assert settings.regression_min_executions == 10
    assert settings.resolve_after == 2
    assert (settings.baseline_window, settings.baseline_interval) == (7 * 86400, 3600)
    assert settings.baseline_min_samples == 20
    assert settings.history_retention == 30 * 86400
    assert (settings.api_token, settings.direct_database, settings.direct_database_secret) == (
        None,
        None,
        None,
    )
    shown = {name: (value, source) for name, value, source in settings.describe()}
    assert shown["JOBWARDEN_BASELINE_WINDOW"] == ("7d", "default")
    assert shown["JOBWARDEN_HISTORY_RETENTION"] == ("30d", "default")
    assert shown["JOBWARDEN_API_TOKEN"] == ("(unset)", "default")


def test_monitoring_knobs_take_any_positive_value_on_the_scale_of_seconds() -> None:
    settings = load_settings(
        {
            "JOBWARDEN_POLL_INTERVAL": "1s",
            "JOBWARDEN_FAILURE_THRESHOLD": "1",
            "JOBWARDEN_FAILURE_RATE": "1",
            "JOBWARDEN_FAILURE_WINDOW": "90s",
            "JOBWARDEN_FAILURE_MIN_EXECUTIONS": "100000",
            "JOBWARDEN_DEFAULT_GRACE": "0",
            "JOBWARDEN_REGRESSION_FACTOR": "1.05",
            "JOBWARDEN_REGRESSION_WINDOW": "10s",
            "JOBWARDEN_REGRESSION_MIN_EXECUTIONS": "1",
            "JOBWARDEN_RESOLVE_AFTER": "1",
            "JOBWARDEN_BASELINE_WINDOW": "2s",
            "JOBWARDEN_BASELINE_INTERVAL": "1s",
            "JOBWARDEN_BASELINE_MIN_SAMPLES": "1",
            "JOBWARDEN_HISTORY_RETENTION": "12s",
        }
    )
    assert settings.poll_interval == 1
    assert (settings.failure_threshold, settings.failure_rate) == (1, 1.0)
    assert (settings.failure_window, settings.failure_min_executions) == (90, 100000)
    assert (settings.default_grace, settings.regression_factor) == (0, 1.05)
    assert (settings.regression_window, settings.regression_min_executions) == (10, 1)
    assert (settings.resolve_after, settings.baseline_window) == (1, 2)
    assert (settings.baseline_interval, settings.baseline_min_samples) == (1, 1)
    assert settings.history_retention == 12
    assert settings.sources["JOBWARDEN_POLL_INTERVAL"] == "environment"


def test_one_bad_value_per_new_variable_all_reported_at_once() -> None:
    env = {
        "DIRECT_URL": "mysql://admin:direct-pw@db/app",
        "JOBWARDEN_API_TOKEN": "too-short-tok",
        "JOBWARDEN_POLL_INTERVAL": "0s",
        "JOBWARDEN_FAILURE_THRESHOLD": "0",
        "JOBWARDEN_FAILURE_RATE": "1.5",
        "JOBWARDEN_FAILURE_WINDOW": "soon",
        "JOBWARDEN_FAILURE_MIN_EXECUTIONS": "-1",
        "JOBWARDEN_DEFAULT_GRACE": "-1s",
        "JOBWARDEN_REGRESSION_FACTOR": "1",
        "JOBWARDEN_REGRESSION_WINDOW": "0",
        "JOBWARDEN_REGRESSION_MIN_EXECUTIONS": "ten",
        "JOBWARDEN_RESOLVE_AFTER": "1.5",
        "JOBWARDEN_BASELINE_WINDOW": "0ms",
        "JOBWARDEN_BASELINE_INTERVAL": "an hour",
        "JOBWARDEN_BASELINE_MIN_SAMPLES": "0",
        "JOBWARDEN_HISTORY_RETENTION": "forever",
    }
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    problems = raised.value.problems
    assert sorted(p.split(":", 1)[0] for p in problems) == sorted(env)  # one line each
    assert "JOBWARDEN_FAILURE_RATE: must be greater than 0 and at most 1, not 1.5" in problems
    assert "JOBWARDEN_REGRESSION_FACTOR: must be greater than 1, not 1" in problems
    threshold = "JOBWARDEN_FAILURE_THRESHOLD: must be a positive integer up to 1000000, not '0'"
    assert threshold in problems
    assert "JOBWARDEN_POLL_INTERVAL: must be greater than zero" in problems
    text = str(raised.value)
    for secret in ("direct-pw", "too-short-tok"):
        assert secret not in text


def test_the_api_token_is_never_echoed_and_counts_as_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"JOBWARDEN_API_TOKEN": "hunter2 hunter2 hunter2"})  # has spaces
    assert raised.value.problems == [
        "JOBWARDEN_API_TOKEN: must be at least 16 printable ASCII characters without spaces"
        " (value hidden)"
    ]
    (tmp_path / "JOBWARDEN_API_TOKEN").write_text(TOKEN + "\n")
    settings = load_settings(
        {"CREDENTIALS_DIRECTORY": str(tmp_path), "JOBWARDEN_HTTP_HOST": ANY_ADDRESS}
    )
    assert settings.api_token is not None
    assert settings.api_token.reveal() == TOKEN
    shown = {name: (value, source) for name, value, source in settings.describe()}
    assert shown["JOBWARDEN_API_TOKEN"] == ("*** (set)", "credential")
    assert TOKEN not in repr(settings)
    assert TOKEN in settings.secret_values()


@pytest.mark.parametrize("host", [ANY_ADDRESS, "::", "192.168.1.10", "jobwarden.internal"])
def test_listening_beyond_loopback_without_a_token_is_a_problem(host: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"JOBWARDEN_HTTP_HOST": host, "JOBWARDEN_LOG_LEVEL": "loud"})
    assert raised.value.problems[-1] == (
        f"JOBWARDEN_API_TOKEN: required when JOBWARDEN_HTTP_HOST ({host}) is not a loopback address"
    )
    assert len(raised.value.problems) == 2  # reported together with the bad log level
    settings = load_settings({"JOBWARDEN_HTTP_HOST": host, "JOBWARDEN_API_TOKEN": TOKEN})
    assert settings.http_host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    assert load_settings({"JOBWARDEN_HTTP_HOST": host}).api_token is None


def test_history_must_outlast_the_baseline_and_regression_windows() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"JOBWARDEN_HISTORY_RETENTION": "7d", "JOBWARDEN_LOG_FORMAT": "xml"})
    assert raised.value.problems[-1] == (
        "JOBWARDEN_HISTORY_RETENTION: must be at least JOBWARDEN_BASELINE_WINDOW"
        " + JOBWARDEN_REGRESSION_WINDOW (169h), not 7d"
    )
    assert raised.value.problems[0].startswith("JOBWARDEN_LOG_FORMAT: ")
    settings = load_settings(
        {
            "JOBWARDEN_HISTORY_RETENTION": "3d",
            "JOBWARDEN_BASELINE_WINDOW": "2d",
            "JOBWARDEN_REGRESSION_WINDOW": "1d",
        }
    )
    assert settings.history_retention == 3 * 86400  # exactly enough is enough


def test_direct_url_is_parsed_like_database_url_and_stays_secret() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://app:pooled-pw@pgbouncer:6432/app?pgbouncer=true",
            "DIRECT_URL": "postgresql://app:direct-pw@db:5432/app?schema=web&connection_limit=2",
        }
    )
    assert settings.database is not None
    assert settings.database.pgbouncer
    direct = settings.direct_database
    assert direct is not None
    assert (direct.pgbouncer, direct.schema, direct.password) == (False, "web", "direct-pw")
    assert direct.dsn == "postgresql://app:direct-pw@db:5432/app"
    assert settings.effective_pool_size == 5  # only DATABASE_URL's connection_limit counts
    shown = {name: value for name, value, _ in settings.describe()}
    assert shown["DIRECT_URL"] == "postgresql://app:***@db:5432/app"
    assert "direct-pw" not in repr(settings)
    assert "direct-pw" in settings.secret_values()


def test_only_the_mapping_passed_in_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBWARDEN_LOG_LEVEL", "debug")
    monkeypatch.setenv("JOBWARDEN_HTTP_HOST", ANY_ADDRESS)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.from-os-environ")
    settings = load_settings({"HOME": "/home/ops"})
    assert (settings.log_level, settings.http_host) == ("info", "127.0.0.1")
    assert settings.sendgrid_api_key is None


def test_an_unreadable_credential_is_a_problem_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "SENDGRID_API_KEY").mkdir()  # reading a directory fails
    with pytest.raises(ConfigError) as raised:
        load_settings({"CREDENTIALS_DIRECTORY": str(tmp_path), "SENDGRID_API_KEY": "SG.env"})
    assert raised.value.problems == [
        f"SENDGRID_API_KEY: cannot read credential file {tmp_path / 'SENDGRID_API_KEY'}:"
        " IsADirectoryError"
    ]


def test_check_config_shows_every_declared_variable_once() -> None:
    names = [name for name, _, _ in load_settings({"HOME": "/home/ops"}).describe()]
    assert names == [variable.name for variable in VARIABLES]
    assert len(set(names)) == len(names)
    assert {"DIRECT_URL", "JOBWARDEN_API_TOKEN", "JOBWARDEN_POLL_INTERVAL"} <= set(names)


def test_a_misspelt_new_variable_is_warned_about_too() -> None:
    settings = load_settings({"JOBWARDEN_POLL_INTERVALL": "10s"})
    assert settings.poll_interval == 30
    assert settings.warnings == (
        "JOBWARDEN_POLL_INTERVALL is not a jobwarden setting and is ignored (a typo?)",
    )


def test_delivery_settings_have_their_documented_defaults() -> None:
    settings = load_settings({})
    assert (settings.slack_min_severity, settings.webhook_min_severity) == ("WARNING", "INFO")
    assert settings.email_min_severity == "ERROR"
    assert settings.alert_repeat_interval == 4 * 3600
    assert settings.delivery_max_age == 24 * 3600
    assert (settings.delivery_backoff_base, settings.delivery_backoff_cap) == (5, 600)
    assert settings.digest_threshold == 10
    assert settings.db_down_alert_after == 60
    assert settings.sendgrid_sandbox is False


def test_delivery_settings_accept_short_waits_lowercase_severities_and_zero_repeat() -> None:
    settings = load_settings(
        {
            "JOBWARDEN_DELIVERY_BACKOFF_BASE": "100ms",
            "JOBWARDEN_DELIVERY_BACKOFF_CAP": "100ms",
            "JOBWARDEN_SLACK_MIN_SEVERITY": "critical",
            "JOBWARDEN_ALERT_REPEAT_INTERVAL": "0",
            "JOBWARDEN_SENDGRID_SANDBOX": "true",
        }
    )
    assert settings.delivery_backoff_base == settings.delivery_backoff_cap == 0.1
    assert settings.slack_min_severity == "CRITICAL"
    assert settings.alert_repeat_interval == 0
    assert settings.sendgrid_sandbox is True


def test_bad_delivery_settings_are_all_named() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            {
                "JOBWARDEN_EMAIL_MIN_SEVERITY": "urgent",
                "JOBWARDEN_SENDGRID_SANDBOX": "maybe",
                "JOBWARDEN_DELIVERY_BACKOFF_BASE": "1m",
                "JOBWARDEN_DELIVERY_BACKOFF_CAP": "10s",
                "JOBWARDEN_DIGEST_THRESHOLD": "0",
            }
        )
    named = {problem.split(":")[0] for problem in raised.value.problems}
    assert named == {
        "JOBWARDEN_EMAIL_MIN_SEVERITY",
        "JOBWARDEN_SENDGRID_SANDBOX",
        "JOBWARDEN_DELIVERY_BACKOFF_CAP",
        "JOBWARDEN_DIGEST_THRESHOLD",
    }
