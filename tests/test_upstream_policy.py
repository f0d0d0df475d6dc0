"""The retry and circuit-breaker policy of upstream.py, with a fake clock (pure logic; the real relay is
exercised end to end in tests/test_reliability.py)."""

import random

from modelmux.config import CircuitBreakerConfig, RetryConfig
from modelmux.upstream import CircuitBreaker, backoff_delay


def test_pain24_backoff_is_exponential_with_full_jitter_and_honours_retry_after():
    cfg = RetryConfig(backoff_initial_seconds=0.5, backoff_max_seconds=4)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [backoff_delay(attempt, cfg, None, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # jitter spans the range, it does not cluster
    assert backoff_delay(1, cfg, 7.0, rng) == 7.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_pain24_circuit_opens_after_a_burst_and_half_opens_after_cooldown():
    clock = Clock()
    b = CircuitBreaker(CircuitBreakerConfig(failures=3, window_seconds=10, cooldown_seconds=30), clock)
    regions = ["us-east5", "global"]
    b.failure("us-east5")
    b.failure("us-east5")
    assert b.order(regions) == regions  # two failures: still closed
    b.failure("us-east5")
    assert b.is_open("us-east5") and b.order(regions) == ["global", "us-east5"]
    clock.now += 31  # cooldown over: one trial may go
    assert not b.is_open("us-east5") and b.order(regions) == regions
    b.attempt("us-east5")
    assert b.is_open("us-east5")  # while the trial runs, others keep avoiding the region
    b.failure("us-east5")  # the trial failed: open again, a full cooldown
    clock.now += 29
    assert b.is_open("us-east5")
    clock.now += 2
    b.attempt("us-east5")
    b.success("us-east5")
    assert not b.is_open("us-east5") and b.state() == {}


def test_failures_outside_the_window_do_not_add_up():
    clock = Clock()
    b = CircuitBreaker(CircuitBreakerConfig(failures=2, window_seconds=5, cooldown_seconds=30), clock)
    b.failure("eu")
    clock.now += 6
    b.failure("eu")
    assert not b.is_open("eu")
