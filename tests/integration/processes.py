"""Running the real `jobwarden` command line in a subprocess, as systemd or a user would."""

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

# Variables the daemon reads; tests start from none of them set.
_DAEMON_VARIABLES = (
    "DATABASE_URL",
    "DIRECT_URL",
    "ALERT_WEBHOOK_URL",
    "SLACK_WEBHOOK_URL",
    "SENDGRID_API_KEY",
    "ALERT_EMAIL_FROM",
    "ALERT_EMAIL_RECIPIENTS",
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
)


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DAEMON_VARIABLES and not k.startswith("JOBWARDEN_")
    }
    env["JOBWARDEN_LOG_FORMAT"] = "logfmt"
    env.update(extra)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobwarden", *args]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, env: Mapping[str, str], timeout: float = 60) -> Result:
    done = subprocess.run(
        command(*args), env=clean_env(env), capture_output=True, text=True, timeout=timeout
    )
    return Result(done.returncode, done.stdout, done.stderr)
