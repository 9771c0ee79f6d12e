"""When a job is due next: a fixed period (`--every`) or a cron expression.

Cron parsing and fire times come from APScheduler's `CronTrigger`, which also
handles daylight-saving changes in the expression's time zone.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from jobwarden.durations import format_duration

_EARLY_TOLERANCE = timedelta(seconds=60)
_TICK = timedelta(microseconds=1)


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


@lru_cache(maxsize=4096)
def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """The trigger for a five-field crontab expression; ValueError says what is wrong."""
    try:
        trigger: CronTrigger = CronTrigger.from_crontab(
            expression, timezone=parse_timezone(timezone)
        )
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return trigger


def _fire_after(trigger: CronTrigger, moment: datetime) -> datetime | None:
    """The first fire time strictly after `moment`, in UTC.

    The arithmetic is done in UTC: in a zone's repeated autumn hour, adding to or
    subtracting local times compares wall clocks, not instants.
    """
    fire: datetime | None = trigger.get_next_fire_time(None, moment.astimezone(UTC) + _TICK)
    return None if fire is None else fire.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    every: float | None = None  # seconds
    cron: str | None = None
    timezone: str = "UTC"

    def describe(self) -> str:
        if self.every is not None:
            return f"every {format_duration(self.every)}"
        if self.cron is not None:
            zone = "" if self.timezone == "UTC" else f" ({self.timezone})"
            return f"cron {self.cron}{zone}"
        return "no schedule"

    def next_due(self, last_run: datetime | None, anchor: datetime) -> datetime | None:
        """When the run after `last_run` is due (after `anchor` if it never ran), in UTC.

        A cron job that ran up to a minute early (clock skew, a scheduler firing
        a little ahead) is taken to have done the run it was early for.
        """
        start = last_run or anchor
        if self.every is not None:
            return (start + timedelta(seconds=self.every)).astimezone(UTC)
        if self.cron is None:
            return None
        trigger = cron_trigger(self.cron, self.timezone)
        due = _fire_after(trigger, start)
        if due is None or last_run is None:
            return due
        following = _fire_after(trigger, due)
        tolerance = (
            _EARLY_TOLERANCE if following is None else min(_EARLY_TOLERANCE, (following - due) / 2)
        )
        if due - last_run < tolerance:
            return following
        return due
