"""Exponential backoff with jitter and a cap: how long to wait before try N+1."""

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackoffPolicy:
    """`delay(attempt)` for attempt 1, 2, … grows as initial·factor^(attempt-1), capped.

    Jitter spreads replicas that failed together: the delay is drawn uniformly from
    [(1 - jitter)·d, d]. A server-imposed wait (Retry-After) longer than the
    computed delay takes precedence.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.maximum < self.initial:
            raise ValueError("backoff needs initial > 0, factor >= 1, maximum >= initial")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction between 0 and 1")

    def delay(self, attempt: int, server_wait: float | None = None) -> float:
        if attempt < 1:
            raise ValueError("attempts are counted from 1")
        # min() before the power would overflow for large attempt numbers
        exponent = min(attempt - 1, 64)
        base = min(self.maximum, self.initial * self.factor**exponent)
        delay = base * (1 - self.jitter * self.rng.random())
        if server_wait is not None and server_wait > delay:
            return server_wait
        return delay
