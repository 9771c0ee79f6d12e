import random

import pytest

from jobwarden.backoff import BackoffPolicy


def test_delays_grow_exponentially_and_stop_at_the_cap() -> None:
    policy = BackoffPolicy(initial=0.5, factor=2, maximum=30, jitter=0)
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.delay(10_000) == 30  # no overflow after days of outage


def test_jitter_stays_within_its_band() -> None:
    policy = BackoffPolicy(initial=1, maximum=60, jitter=0.2, rng=random.Random(7))
    delays = [policy.delay(4) for _ in range(200)]
    assert all(6.4 <= d <= 8 for d in delays)
    assert len(set(delays)) > 100  # replicas do not retry in lockstep


def test_a_longer_server_wait_takes_precedence() -> None:
    policy = BackoffPolicy(initial=1, maximum=10, jitter=0)
    assert policy.delay(1, server_wait=42) == 42
    assert policy.delay(3, server_wait=0.5) == 4


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0}, {"factor": 0.5}, {"maximum": 0.1}, {"jitter": 1.5}]
)
def test_nonsense_policies_are_rejected(kwargs: dict[str, float]) -> None:
    settings = {"initial": 0.5, "factor": 2.0, "maximum": 30.0, "jitter": 0.2, **kwargs}
    with pytest.raises(ValueError, match=r"backoff|jitter"):
        BackoffPolicy(
            initial=settings["initial"],
            factor=settings["factor"],
            maximum=settings["maximum"],
            jitter=settings["jitter"],
        )
