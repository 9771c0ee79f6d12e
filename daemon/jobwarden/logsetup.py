"""Logging: structlog, one event per line, journald-aware.

Under systemd (stdout is the journal stream named by `$JOURNAL_STREAM`) every line
starts with the syslog priority `<N>` so `journalctl -p err` filters, and a
traceback stays inside its line (newlines escaped) so it is one journal record.
On a terminal the console renderer is used; elsewhere logfmt, or JSON on request.
Standard-library loggers (asyncpg, aiohttp, apscheduler) go through the same
pipeline. Secret values are scrubbed from every rendered line as a last defence.
"""

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from jobwarden.secret import REDACTED

# syslog priorities (sd-daemon.h SD_ERR etc.)
_PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "info": 6, "debug": 7}
_NOISY_LIBRARIES = {
    "apscheduler": logging.WARNING,
    "aiohttp.access": logging.WARNING,
    "pgserver": logging.WARNING,
}


def stream_is_journal(journal_stream: tuple[int, int] | None, stream: TextIO) -> bool:
    """True when `stream` is the journal stream systemd named in `$JOURNAL_STREAM`."""
    if journal_stream is None:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == journal_stream


class _Finish:
    """Render, scrub secrets, and (for the journal) prefix the priority and keep one line."""

    def __init__(self, render: Processor, journal: bool, secrets: Iterable[str]) -> None:
        self._render = render
        self._journal = journal
        # Longest first, so a URL containing a shorter secret is replaced whole.
        self._secrets = sorted(set(secrets), key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> str:
        level = str(event.get("level", method))
        line = str(self._render(logger, method, event))
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        if self._journal:
            line = line.replace("\r", "\\r").replace("\n", "\\n")
            return f"<{_PRIORITY.get(level, 6)}>{line}"
        return line


def _renderer(fmt: str, journal: bool, tty: bool) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(sort_keys=False)
    if fmt == "console" or (fmt == "auto" and tty and not journal):
        return structlog.dev.ConsoleRenderer(colors=tty and not journal)
    return structlog.processors.LogfmtRenderer(
        key_order=["level", "event"], drop_missing=True, bool_as_flag=False
    )


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "auto",
    journal_stream: tuple[int, int] | None = None,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library once for the whole process."""
    out = stream or sys.stdout
    journal = stream_is_journal(journal_stream, out)
    tty = out.isatty()
    console = fmt == "console" or (fmt == "auto" and tty and not journal)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
    ]
    if not journal:  # the journal stamps every record itself
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    if not console:
        shared.append(structlog.processors.format_exc_info)

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _Finish(_renderer(fmt, journal, tty), journal, secrets),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    for name, floor in _NOISY_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(floor, numeric))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **initial: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger
