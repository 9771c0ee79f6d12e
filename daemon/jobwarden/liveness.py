"""Whether the scheduler is alive: the heartbeat job stamps it, health and watchdog read it."""

import time
from dataclasses import dataclass, field


@dataclass
class Liveness:
    stale_after: float  # seconds without a beat before the scheduler counts as stuck
    last_beat: float | None = field(default=None)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def age(self) -> float | None:
        return None if self.last_beat is None else time.monotonic() - self.last_beat

    def fresh(self) -> bool:
        age = self.age()
        return age is not None and age <= self.stale_after
