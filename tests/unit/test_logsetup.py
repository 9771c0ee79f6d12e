"""Log lines as journald and a terminal-less pipe receive them, run in a real subprocess."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import sys
    from jobwarden.logsetup import configure_logging, get_logger
    device, inode = (int(x) for x in sys.argv[1].split(":")) if sys.argv[1] else (0, 0)
    configure_logging(
        level="debug", fmt=sys.argv[2], journal_stream=(device, inode) if device else None,
        secrets=["hunter2-secret"],
    )
    log = get_logger("jobwarden.test")
    log.info("poll pass finished", jobs=3, dsn="postgres://u:hunter2-secret@h/d")
    log.warning("slow run")
    try:
        raise RuntimeError("boom\\nsecond line")
    except RuntimeError:
        log.exception("pass failed", job="rollup")
    import logging
    logging.getLogger("asyncpg").error("from the standard library")
    """
)


def _run(tmp_path: Path, fmt: str, journal: bool) -> list[str]:
    out = tmp_path / "stdout"
    with out.open("w") as stdout:
        st = os.fstat(stdout.fileno())
        stream = f"{st.st_dev}:{st.st_ino}" if journal else ""
        subprocess.run(
            [sys.executable, "-c", SCRIPT, stream, fmt], stdout=stdout, check=True, timeout=30
        )
    return out.read_text().splitlines()


def test_journal_lines_carry_the_priority_and_keep_a_traceback_in_one_record(
    tmp_path: Path,
) -> None:
    lines = _run(tmp_path, "auto", journal=True)
    assert len(lines) == 4
    assert lines[0].startswith('<6>level=info event="poll pass finished" jobs=3')
    assert lines[1].startswith("<4>level=warning")
    assert lines[2].startswith('<3>level=error event="pass failed"')
    assert "Traceback (most recent call last):" in lines[2]
    assert "RuntimeError: boom\\nsecond line" in lines[2]
    assert lines[3].startswith('<3>level=error event="from the standard library"')
    assert "timestamp=" not in lines[0]  # the journal stamps records itself
    assert all("hunter2-secret" not in line for line in lines)


def test_json_under_the_journal_is_prefixed_json(tmp_path: Path) -> None:
    lines = _run(tmp_path, "json", journal=True)
    assert lines[2].startswith("<3>{")
    record = json.loads(lines[2][3:])
    assert record["event"] == "pass failed"
    assert "RuntimeError" in record["exception"]


def test_off_the_journal_lines_have_no_prefix_and_a_timestamp(tmp_path: Path) -> None:
    lines = _run(tmp_path, "auto", journal=False)
    assert lines[0].startswith('level=info event="poll pass finished"')
    assert "timestamp=" in lines[0]
    assert "***" in lines[0]
    assert "hunter2-secret" not in lines[0]
