"""When a scheduled job is due next: fixed periods, cron, and daylight-saving days."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobwarden.monitoring.schedule import Schedule

ANCHOR = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def utc(moment: datetime | None) -> datetime:
    """Compare instants: aware datetimes in a DST fold do not compare across zones."""
    assert moment is not None
    return moment.astimezone(UTC)


def test_an_every_job_is_due_one_period_after_its_last_run() -> None:
    schedule = Schedule(every=300)
    assert schedule.next_due(at(2026, 6, 1, 10, 0, 7), ANCHOR) == at(2026, 6, 1, 10, 5, 7)


def test_an_every_job_that_never_ran_is_due_one_period_after_the_anchor() -> None:
    assert Schedule(every=3600).next_due(None, ANCHOR) == at(2026, 6, 1, 1, 0)


def test_no_schedule_is_never_due() -> None:
    assert Schedule().next_due(at(2026, 6, 1, 10, 0), ANCHOR) is None


@pytest.mark.parametrize(
    ("last_run", "due"),
    [
        (at(2026, 6, 1, 10, 0, 5), at(2026, 6, 1, 11, 0)),  # ran on time
        (at(2026, 6, 1, 10, 0), at(2026, 6, 1, 11, 0)),  # ran on the second
        (at(2026, 6, 1, 10, 40), at(2026, 6, 1, 11, 0)),  # an extra run in between
    ],
)
def test_a_cron_job_is_due_at_the_next_fire_after_its_last_run(
    last_run: datetime, due: datetime
) -> None:
    assert Schedule(cron="0 * * * *").next_due(last_run, ANCHOR) == due


def test_a_cron_job_that_never_ran_is_due_at_the_first_fire_after_the_anchor() -> None:
    schedule = Schedule(cron="0 2 * * *", timezone="Europe/Berlin")
    # 00:00 UTC is 02:00 in Berlin in June: the first fire strictly after it is the next day's.
    assert utc(schedule.next_due(None, ANCHOR)) == at(2026, 6, 2, 0, 0)
    assert utc(schedule.next_due(None, at(2026, 5, 31, 12, 0))) == at(2026, 6, 1, 0, 0)


@pytest.mark.parametrize(
    ("last_run", "due"),
    [
        (at(2026, 6, 1, 10, 59, 30), at(2026, 6, 1, 12, 0)),  # 30 s early: that was 11:00's run
        (at(2026, 6, 1, 10, 58, 30), at(2026, 6, 1, 11, 0)),  # 90 s early: 11:00 is still due
    ],
)
def test_a_cron_run_up_to_a_minute_early_counts_as_the_run_it_was_early_for(
    last_run: datetime, due: datetime
) -> None:
    assert Schedule(cron="0 * * * *").next_due(last_run, ANCHOR) == due


def test_an_early_tolerance_never_swallows_a_minutely_run() -> None:
    # Every minute: a run 40 s before a fire is the previous minute's run, late, not early.
    assert Schedule(cron="* * * * *").next_due(at(2026, 6, 1, 10, 0, 20), ANCHOR) == at(
        2026, 6, 1, 10, 1
    )


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("Europe/Berlin", date(2026, 3, 29)),  # spring forward: 02:00 -> 03:00
        ("Europe/Berlin", date(2026, 10, 25)),  # fall back: 03:00 -> 02:00
        ("America/New_York", date(2026, 3, 8)),
        ("America/New_York", date(2026, 11, 1)),
    ],
)
def test_a_daily_0230_job_stays_daily_across_a_dst_change(zone: str, day: date) -> None:
    schedule = Schedule(cron="30 2 * * *", timezone=zone)
    tz = ZoneInfo(zone)
    run = datetime.combine(day - timedelta(days=2), time(2, 30), tz).astimezone(UTC)
    dues = []
    for _ in range(4):  # the job runs when due, its runs read back in UTC
        run = utc(schedule.next_due(run, ANCHOR))
        dues.append(run)
    assert dues == sorted(set(dues))
    local_days = {d.astimezone(tz).date() for d in dues}
    assert {day - timedelta(days=1), day, day + timedelta(days=1)} <= local_days
    after = dues[-1].astimezone(tz)
    assert (after.hour, after.minute) == (2, 30)


@pytest.mark.parametrize(
    ("last_run", "due"),
    [
        # 30 s before 02:30 CEST, the first 02:30 of the day: that run is done, and a job at
        # a fixed hour runs once on the fall-back night (as cron runs it), so the second
        # 02:30 (CET) is not due: the next is the following day's.
        (at(2026, 10, 25, 0, 29, 30), at(2026, 10, 26, 1, 30)),
        # The day before, at its 02:30 CEST: due at the first 02:30 of the fall-back night.
        (at(2026, 10, 24, 0, 30, 5), at(2026, 10, 25, 0, 30)),
    ],
)
def test_an_early_run_counts_on_the_fall_back_day_too(last_run: datetime, due: datetime) -> None:
    schedule = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    assert utc(schedule.next_due(last_run, ANCHOR)) == due


def test_a_wildcard_hour_job_is_due_at_both_occurrences_of_the_repeated_hour() -> None:
    hourly = Schedule(cron="30 * * * *", timezone="Europe/Berlin")
    first_0230 = at(2026, 10, 25, 0, 30, 5)  # 02:30 CEST
    assert utc(hourly.next_due(first_0230, ANCHOR)) == at(2026, 10, 25, 1, 30)  # 02:30 CET


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        (Schedule(cron="61 * * * *"), "61"),
        (Schedule(cron="0 2 * *"), "Wrong number of fields"),
        (Schedule(cron="0 2 * * mon-xyz"), "xyz"),
        (Schedule(cron="0 2 * * *", timezone="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_bad_cron_schedule_says_what_is_wrong(schedule: Schedule, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        schedule.next_due(None, ANCHOR)


@pytest.mark.parametrize(
    ("schedule", "text"),
    [
        (Schedule(every=300), "every 5m"),
        (Schedule(every=3600), "every 1h"),
        (Schedule(cron="0 2 * * *"), "cron 0 2 * * *"),
        (
            Schedule(cron="0 2 * * *", timezone="America/New_York"),
            "cron 0 2 * * * (America/New_York)",
        ),
        (Schedule(), "no schedule"),
    ],
)
def test_a_schedule_describes_itself(schedule: Schedule, text: str) -> None:
    assert schedule.describe() == text
