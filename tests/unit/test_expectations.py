"""Validating and merging per-job expectations, as `jobs set` and `/api/jobs` give them."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobwarden.monitoring.expectations import (
    ExpectationChange,
    InvalidExpectation,
    apply_change,
    parse_change,
    parse_until,
    validate_job_id,
)
from jobwarden.monitoring.model import Expectation
from jobwarden.monitoring.schedule import Schedule

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def problems(raw: dict[str, Any]) -> list[str]:
    """The fields named by the error for `raw`."""
    with pytest.raises(InvalidExpectation) as caught:
        parse_change(raw)
    return [name for name, _ in caught.value.problems]


@pytest.mark.parametrize(
    ("raw", "change"),
    [
        ({"every": "5m"}, ExpectationChange(every=300)),
        ({"every": "1s"}, ExpectationChange(every=1)),
        ({"every": 90}, ExpectationChange(every=90)),
        ({"cron": " 0 2 * * * "}, ExpectationChange(cron="0 2 * * *")),
        (
            {"cron": "0 2 * * *", "timezone": "America/New_York"},
            ExpectationChange(cron="0 2 * * *", timezone="America/New_York"),
        ),
        ({"timezone": "Europe/Berlin"}, ExpectationChange(timezone="Europe/Berlin")),
        ({"grace": "10m"}, ExpectationChange(grace=600)),
        ({"grace": "0"}, ExpectationChange(grace=0)),
        ({"failure_threshold": "3"}, ExpectationChange(failure_threshold=3)),
        ({"failure_threshold": 5}, ExpectationChange(failure_threshold=5)),
        ({"failure_rate": "0.25"}, ExpectationChange(failure_rate=0.25)),
        ({"failure_rate": 1}, ExpectationChange(failure_rate=1.0)),
        ({"regression_factor": "2"}, ExpectationChange(regression_factor=2.0)),
        ({"regression_factor": 1.2}, ExpectationChange(regression_factor=1.2)),
        ({"every": None, "grace": "30s"}, ExpectationChange(grace=30)),  # None: not given
    ],
)
def test_good_values_are_parsed(raw: dict[str, Any], change: ExpectationChange) -> None:
    assert parse_change(raw) == change


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("every", "soon"),
        ("every", "0s"),
        ("every", "-5m"),
        ("every", True),
        ("cron", "0 2 * *"),
        ("cron", "61 * * * *"),
        ("cron", ""),
        ("timezone", "Mars/Olympus"),
        ("grace", "-1s"),
        ("grace", "later"),
        ("failure_threshold", "0"),
        ("failure_threshold", "2.5"),
        ("failure_threshold", -1),
        ("failure_rate", "0"),
        ("failure_rate", "1.5"),
        ("failure_rate", "half"),
        ("failure_rate", "nan"),
        ("regression_factor", "1"),
        ("regression_factor", 0.5),
        ("regression_factor", "fast"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(field: str, value: object) -> None:
    assert problems({field: value}) == [field]


def test_every_problem_is_reported_at_once() -> None:
    raw = {"every": "soon", "grace": "-1s", "failure_rate": "2", "colour": "red"}
    assert sorted(problems(raw)) == ["colour", "every", "failure_rate", "grace"]


def test_every_and_cron_together_are_refused() -> None:
    assert problems({"every": "5m", "cron": "0 2 * * *"}) == ["cron"]


def test_a_timezone_with_every_is_refused() -> None:
    assert problems({"every": "5m", "timezone": "Europe/Berlin"}) == ["timezone"]


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(InvalidExpectation, match="max_retries: is not an expectation field"):
        parse_change({"max_retries": "3"})


def test_an_unknown_time_zone_is_named_in_the_message() -> None:
    with pytest.raises(InvalidExpectation, match="timezone: unknown time zone 'Mars/Olympus'"):
        parse_change({"cron": "0 2 * * *", "timezone": "Mars/Olympus"})


CURRENT = Expectation(
    "content-generation",
    schedule=Schedule(cron="0 2 * * *", timezone="America/New_York"),
    grace=600,
    failure_threshold=5,
    failure_rate=0.8,
    regression_factor=2,
    paused=True,
    maintenance_until=NOW + timedelta(hours=1),
    created_at=NOW - timedelta(days=3),
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"grace": "1m"}, replace(CURRENT, grace=60)),
        ({"grace": "0"}, replace(CURRENT, grace=0)),
        ({"failure_threshold": "2"}, replace(CURRENT, failure_threshold=2)),
        ({"failure_rate": "0.3"}, replace(CURRENT, failure_rate=0.3)),
        ({"regression_factor": "3"}, replace(CURRENT, regression_factor=3)),
        ({}, CURRENT),
    ],
)
def test_a_change_touches_only_the_fields_given(raw: dict[str, Any], expected: Expectation) -> None:
    assert apply_change(CURRENT, parse_change(raw), NOW) == expected


def test_every_replaces_a_cron_schedule() -> None:
    changed = apply_change(CURRENT, parse_change({"every": "15m"}), NOW)
    assert changed.schedule == Schedule(every=900)
    assert changed.schedule.describe() == "every 15m"
    assert changed.grace == 600
    assert changed.schedule_set_at == NOW  # a job that never ran is due from now on


def test_cron_replaces_an_every_schedule() -> None:
    periodic = replace(CURRENT, schedule=Schedule(every=900))
    changed = apply_change(periodic, parse_change({"cron": "30 3 * * *", "timezone": "UTC"}), NOW)
    assert changed.schedule == Schedule(cron="30 3 * * *", timezone="UTC")


def test_a_timezone_alone_moves_a_cron_schedule() -> None:
    changed = apply_change(CURRENT, parse_change({"timezone": "Europe/Berlin"}), NOW)
    assert changed.schedule == Schedule(cron="0 2 * * *", timezone="Europe/Berlin")


def test_a_timezone_alone_is_refused_for_a_job_without_cron() -> None:
    periodic = replace(CURRENT, schedule=Schedule(every=900))
    with pytest.raises(InvalidExpectation) as caught:
        apply_change(periodic, parse_change({"timezone": "Europe/Berlin"}), NOW)
    assert [name for name, _ in caught.value.problems] == ["timezone"]


@pytest.mark.parametrize(
    ("text", "until"),
    [
        ("2026-06-02T06:00Z", datetime(2026, 6, 2, 6, 0, tzinfo=UTC)),
        ("2026-06-02T06:00:00+02:00", datetime(2026, 6, 2, 4, 0, tzinfo=UTC)),
        ("2026-06-01T08:30:00-04:00", datetime(2026, 6, 1, 12, 30, tzinfo=UTC)),
        ("2026-06-02T06:00", datetime(2026, 6, 2, 6, 0, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_a_maintenance_end_in_the_future_is_accepted(text: str, until: datetime) -> None:
    parsed = parse_until(text, NOW)
    assert parsed == until
    assert parsed.utcoffset() is not None


@pytest.mark.parametrize("text", ["2026-06-01T11:59Z", "2026-06-01T12:00:00+00:00"])
def test_a_maintenance_end_in_the_past_is_refused(text: str) -> None:
    with pytest.raises(InvalidExpectation, match="until: is in the past"):
        parse_until(text, NOW)


@pytest.mark.parametrize("text", ["tomorrow", "", "2026-13-01T00:00Z", "06:00"])
def test_a_maintenance_end_that_is_not_a_time_is_refused(text: str) -> None:
    with pytest.raises(InvalidExpectation) as caught:
        parse_until(text, NOW)
    assert [name for name, _ in caught.value.problems] == ["until"]
    assert "ISO 8601" in str(caught.value)


@pytest.mark.parametrize("job", ["content-generation", "reports.daily/eu", "j" * 200])
def test_ordinary_job_ids_are_accepted(job: str) -> None:
    assert validate_job_id(job) == job


@pytest.mark.parametrize("job", ["", "   ", "j" * 201, "bad\nid", "tab\tid"])
def test_empty_overlong_or_control_character_job_ids_are_refused(job: str) -> None:
    with pytest.raises(InvalidExpectation) as caught:
        validate_job_id(job)
    assert [name for name, _ in caught.value.problems] == ["job"]


def test_a_schedule_change_moves_the_anchor_and_other_changes_do_not() -> None:
    assert apply_change(CURRENT, parse_change({"grace": "1m"}), NOW).schedule_set_at is None
    moved = apply_change(CURRENT, parse_change({"cron": "0 3 * * *"}), NOW)
    assert moved.schedule_set_at == NOW
    assert moved.schedule.timezone == "America/New_York"  # the zone stays unless given


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"every": "367d"}, "every"),
        ({"every": 1e12}, "every"),
        ({"grace": "400d"}, "grace"),
        ({"failure_threshold": "99999999999"}, "failure_threshold"),
        ({"cron": "0 0 31 2 *"}, "cron"),
    ],
)
def test_values_beyond_any_sensible_schedule_are_refused(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidExpectation) as caught:
        parse_change(raw)
    assert [name for name, _ in caught.value.problems] == [field]
