"""The shipped unit file: systemd accepts it without a warning, and it is hardened."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jobwarden.config import DEFAULTS, SECRET_VARIABLES

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "jobwarden.service"
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _settings(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "=" in line and not line.startswith("#")]


def test_the_unit_is_a_notify_service_with_watchdog_state_and_credentials() -> None:
    settings = _settings(UNIT.read_text())
    for expected in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "RestartPreventExitStatus=65 78",
        "DynamicUser=yes",
        "StateDirectory=jobwarden",
        "EnvironmentFile=-/etc/jobwarden/jobwarden.env",
        "StartLimitBurst=5",
    ):
        assert expected in settings
    for secret in SECRET_VARIABLES:
        assert f"LoadCredential={secret}:/etc/jobwarden/credentials/{secret}" in settings
        assert f"SetCredential={secret}:\\n" in settings  # a missing file is not fatal


def test_the_env_example_documents_every_variable() -> None:
    example = (SYSTEMD / "jobwarden.env.example").read_text()
    names = set(DEFAULTS) | set(SECRET_VARIABLES) | {"ALERT_EMAIL_FROM", "ALERT_EMAIL_RECIPIENTS"}
    for name in names:
        assert re.search(rf"^#{name}=", example, re.MULTILINE), name


@needs_systemd_analyze
def test_systemd_analyze_verify_prints_no_warning(tmp_path: Path) -> None:
    # verify insists that ExecStart exists; point it at a stub, change nothing else.
    stub = tmp_path / "jobwarden"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    unit = tmp_path / "jobwarden.service"
    unit.write_text(
        UNIT.read_text().replace("ExecStart=/opt/jobwarden/bin/jobwarden", f"ExecStart={stub}")
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""


@needs_systemd_analyze
def test_security_exposure_is_at_most_1_5() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match is not None, done.stdout + done.stderr
    assert float(match.group(1)) <= 1.5
