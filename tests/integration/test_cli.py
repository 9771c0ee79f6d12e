"""The command line as an operator meets it: bad configuration, check-config."""

import os
import subprocess
from pathlib import Path

from tests.integration.processes import clean_env, command, run_cli

BAD = {
    "DATABASE_URL": "postgresql://app:hunter2@db/app?connection_limit=lots",
    "SLACK_WEBHOOK_URL": "hooks.slack.com/services/T0/B0/XYZsecret",
    "SENDGRID_API_KEY": "SG.very-secret",
    "ALERT_EMAIL_RECIPIENTS": "ops@",
    "JOBWARDEN_HTTP_PORT": "70000",
    "JOBWARDEN_LOG_LEVEL": "chatty",
    "JOBWARDEN_DB_CONNECT_TIMEOUT": "-3",
}


def test_bad_configuration_exits_78_listing_every_problem_without_secrets() -> None:
    for args in (("run",), ("check-config",), ("migrate",)):
        result = run_cli(*args, env=BAD)
        assert result.returncode == 78, result.output
        assert "Traceback" not in result.output
        for name in ("DATABASE_URL", "SLACK_WEBHOOK_URL", "ALERT_EMAIL_RECIPIENTS",
                     "ALERT_EMAIL_FROM", "JOBWARDEN_HTTP_PORT", "JOBWARDEN_LOG_LEVEL",
                     "JOBWARDEN_DB_CONNECT_TIMEOUT"):  # fmt: skip
            assert name in result.stderr
        for secret in ("hunter2", "XYZsecret", "SG.very-secret"):
            assert secret not in result.output
        assert "7 problems" in result.stderr


def test_under_the_journal_a_configuration_error_is_one_record_at_priority_err(
    tmp_path: Path,
) -> None:
    err = tmp_path / "stderr"
    with err.open("w") as stderr:
        st = os.fstat(stderr.fileno())
        env = clean_env({**BAD, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        done = subprocess.run(command("run"), env=env, stderr=stderr, timeout=30)
    assert done.returncode == 78
    lines = err.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("<3>invalid configuration: ")


def test_check_config_prints_effective_settings_with_secrets_redacted(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "SENDGRID_API_KEY").write_text("SG.from-a-credential\n")
    result = run_cli(
        "check-config",
        env={
            "DATABASE_URL": "postgresql://app:hunter2@db:5432/app?schema=web&connection_limit=4",
            "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/XYZsecret",
            "CREDENTIALS_DIRECTORY": str(credentials),
            "ALERT_EMAIL_FROM": "Jobs <jobs@example.com>",
            "ALERT_EMAIL_RECIPIENTS": "ops@example.com",
            "JOBWARDEN_HTTP_PORT": "9000",
        },
    )
    assert result.returncode == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "postgresql://app:***@db:5432/app" in lines["DATABASE_URL"]
    assert lines["SLACK_WEBHOOK_URL"].split()[1:] == ["***", "(set)", "[environment]"]
    assert lines["SENDGRID_API_KEY"].endswith("[credential]")
    assert lines["JOBWARDEN_DB_POOL_SIZE"].endswith("4  [DATABASE_URL connection_limit]")
    assert lines["JOBWARDEN_HTTP_PORT"].split()[1:] == ["9000", "[environment]"]
    assert lines["JOBWARDEN_LOG_LEVEL"].split()[1:] == ["info", "[default]"]
    for secret in ("hunter2", "XYZsecret", "SG.from-a-credential"):
        assert secret not in result.output
