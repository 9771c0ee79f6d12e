"""Parsing of the small values that configuration and expectations share.

The same knob (a failure rate, say) can be set for every job by an environment
variable and for one job by `jobs set` or `PUT /api/jobs/...`: one parser each,
so the rules and the messages are the same through every door.
"""

import math

from jobwarden.durations import parse_duration

MAX_COUNT = 1_000_000
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}  # fmt: skip


def boolean(text: str) -> bool:
    """`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, in any case."""
    value = _BOOLEANS.get(text.strip().lower())
    if value is None:
        raise ValueError(f"must be true or false, not {text!r}")
    return value


def positive_int(text: str) -> int:
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()) or not 1 <= int(stripped) <= MAX_COUNT:
        raise ValueError(f"must be a positive integer up to {MAX_COUNT}, not {text!r}")
    return int(stripped)


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {text!r}")
    return value


def rate(text: str) -> float:
    """A fraction of runs: greater than 0, at most 1."""
    value = number(text)
    if not 0 < value <= 1:
        raise ValueError(f"must be greater than 0 and at most 1, not {value:g}")
    return value


def factor(text: str) -> float:
    """A multiple of a baseline: greater than 1."""
    value = number(text)
    if value <= 1:
        raise ValueError(f"must be greater than 1, not {value:g}")
    return value


def growth(text: str) -> float:
    """How much a wait grows each time: at least 1 (1: always the same wait)."""
    value = number(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value:g}")
    return value


def positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds
