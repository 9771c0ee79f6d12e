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


def _fire_after(trigger: CronTrigger, moment: datetime, once_a_day: bool) -> datetime | None:
    """The first fire time strictly after `moment`, in UTC.

    The arithmetic is done in UTC: in a zone's repeated autumn hour, adding to or
    subtracting local times compares wall clocks, not instants. A job at a fixed
    hour (`once_a_day`) is due once when its time comes round twice on the
    fall-back night, as cron runs it: the second occurrence is skipped.
    """
    while True:
        fire: datetime | None = trigger.get_next_fire_time(None, moment.astimezone(UTC) + _TICK)
        if fire is None:
            return None
        if not (once_a_day and _second_occurrence(fire)):
            return fire.astimezone(UTC)
        moment = fire


def _second_occurrence(moment: datetime) -> bool:
    """Whether `moment` is the later of two instants with the same local wall time."""
    local = moment.astimezone(moment.tzinfo)
    return local.fold == 1 and local.replace(fold=0).astimezone(UTC) != local.astimezone(UTC)


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

        Fire times come from APScheduler's CronTrigger in the schedule's zone: on the
        spring-forward night a time that does not exist is due an hour later; on the
        fall-back night a job at a fixed hour is due once (its first occurrence),
        one with a wildcard hour at every occurrence, as cron runs them.

        A cron job that ran up to a minute early (clock skew, a scheduler firing
        a little ahead) is taken to have done the run it was early for.
        """
        start = last_run or anchor
        if self.every is not None:
            return (start + timedelta(seconds=self.every)).astimezone(UTC)
        if self.cron is None:
            return None
        trigger = cron_trigger(self.cron, self.timezone)
        once_a_day = not self.cron.split()[1].startswith("*")  # a fixed hour, as cron sees it
        due = _fire_after(trigger, start, once_a_day)
        if due is None or last_run is None:
            return due
        following = _fire_after(trigger, due, once_a_day)
        tolerance = (
            _EARLY_TOLERANCE if following is None else min(_EARLY_TOLERANCE, (following - due) / 2)
        )
        if due - last_run < tolerance:
            return following
        return due
