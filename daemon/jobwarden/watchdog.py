"""The systemd watchdog: ping at half of WatchdogSec, only while the daemon is healthy.

`problem()` returns None when healthy or a short reason when not. While it
reports a problem no ping is sent, so systemd restarts a daemon whose scheduler
died or whose event loop is blocked (a blocked loop cannot run this task at all).
"""

import asyncio
from collections.abc import Callable

from jobwarden.logsetup import get_logger
from jobwarden.sdnotify import Notifier

log = get_logger(__name__)


async def run_watchdog(
    notifier: Notifier, watchdog_usec: int, problem: Callable[[], str | None]
) -> None:
    """Runs until cancelled."""
    interval = watchdog_usec / 2 / 1_000_000
    withheld_for: str | None = None
    while True:
        reason = problem()
        if reason is None:
            if withheld_for is not None:
                log.info("watchdog pings resumed")
            notifier.watchdog()
        elif reason != withheld_for:
            log.error("withholding watchdog pings; systemd will restart jobwarden", reason=reason)
        withheld_for = reason
        await asyncio.sleep(interval)
