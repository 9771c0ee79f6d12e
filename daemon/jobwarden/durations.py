"""Human durations used by configuration: `250ms`, `30s`, `5m`, `1h`, `7d`, `12` (seconds)."""

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise ValueError for anything else."""
    if text.strip().startswith("-"):
        raise ValueError("must not be negative")
    match = _DURATION.match(text)
    if match is None:
        raise ValueError("expected a duration such as 250ms, 30s, 5m, 1h, 7d or plain seconds")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The inverse of `parse_duration`, for printing effective configuration."""
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds % 86400 == 0 and seconds:
        return f"{int(seconds // 86400)}d"
    if seconds % 3600 == 0 and seconds:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0 and seconds:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
