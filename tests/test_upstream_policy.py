"""The retry and circuit-breaker policy of upstream.py, with a fake clock (pure logic; the real relay is
exercised end to end in tests/test_reliability.py)."""

import random

from modelmux.config import CircuitBreakerConfig, RetryConfig
from modelmux.upstream_policy import CircuitBreaker, backoff_delay


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


def test_a_trial_never_heard_of_again_expires_after_a_cooldown():
    """Its client left, a bug: the region is not left open for good."""
    clock = Clock()
    b = CircuitBreaker(CircuitBreakerConfig(failures=1, window_seconds=10, cooldown_seconds=30), clock)
    b.failure("us-east5")
    clock.now += 31
    b.attempt("us-east5")  # a trial goes … and nothing is heard of it
    assert b.is_open("us-east5")
    clock.now += 29
    assert b.is_open("us-east5")
    clock.now += 2
    assert not b.is_open("us-east5")  # another trial may go
    b.attempt("us-east5")
    b.release("us-east5")  # it ended saying nothing of the region (a 404, a refused token)
    assert not b.is_open("us-east5")


def test_failures_outside_the_window_do_not_add_up():
    clock = Clock()
    b = CircuitBreaker(CircuitBreakerConfig(failures=2, window_seconds=5, cooldown_seconds=30), clock)
    b.failure("eu")
    clock.now += 6
    b.failure("eu")
    assert not b.is_open("eu")


# --- RetryPolicy: the next step after each attempt -------------------------------------------------------------

from modelmux.upstream_policy import (ANSWERED, NOT_IN_REGION, RETRYABLE_STATUS, TIMED_OUT, UNAUTHORIZED,  # noqa: E402
                                      UNREACHABLE, RetryPolicy)

BREAKER = CircuitBreakerConfig(failures=3, window_seconds=30, cooldown_seconds=30)


def policy(max_attempts=4, regions=("us-east5",), clock=None, **retry) -> RetryPolicy:
    cfg = RetryConfig(max_attempts=max_attempts, backoff_initial_seconds=0.5, backoff_max_seconds=4, **retry)
    return RetryPolicy(cfg, list(regions), CircuitBreaker(BREAKER, clock or Clock()), random.Random(1))


def test_a_token_refresh_after_401_is_not_an_attempt():
    """With max_attempts 1 the 401 → refresh → retry still gets its one real answer (it used to consume the only
    attempt and report 502 'could not reach Vertex AI')."""
    p = policy(max_attempts=1)
    assert p.first() == "us-east5" and p.attempts == 1
    step = p.after(UNAUTHORIZED, status=401)
    assert step.region == "us-east5" and step.refresh_token and step.delay == 0 and p.attempts == 1
    assert p.after(ANSWERED, status=200).region is None and p.attempts == 1
    p = policy(max_attempts=1)
    p.first()
    p.after(UNAUTHORIZED, status=401)
    assert p.after(UNAUTHORIZED, status=401).region is None  # a fresh token refused too: the 401 is the answer


def test_retryable_outcomes_back_off_in_the_same_region_until_attempts_run_out():
    p = policy(max_attempts=3)
    p.first()
    first = p.after(RETRYABLE_STATUS, status=429)
    assert first.region == "us-east5" and first.kind == "retry" and 0 <= first.delay <= 0.5
    second = p.after(TIMED_OUT)
    assert second.kind == "retry" and 0 <= second.delay <= 1.0 and p.attempts == 3
    assert p.after(UNREACHABLE).region is None and p.retried and not p.failed_over


def test_retry_after_is_honoured_and_the_wait_budget_is_bounded():
    p = policy(max_attempts=5, max_wait_seconds=10)
    p.first()
    assert p.after(RETRYABLE_STATUS, status=429, retry_after=7).delay == 7
    assert p.after(RETRYABLE_STATUS, status=429, retry_after=7).region is None  # 14 s > the 10 s budget
    assert p.waited == 7


def test_failover_is_immediate_while_another_region_is_healthy():
    p = policy(regions=("us-east5", "global"))
    p.first()
    step = p.after(RETRYABLE_STATUS, status=503)
    assert (step.region, step.delay, step.kind) == ("global", 0.0, "failover") and p.failed_over
    back = p.after(RETRYABLE_STATUS, status=503)  # both failed once: neither is open, the other one again
    assert back.region == "us-east5" and back.kind == "failover"


def test_404_moves_on_without_marking_the_region_unhealthy():
    clock = Clock()
    p = policy(regions=("us-east5", "global", "eu"), clock=clock)
    p.first()
    for _ in range(5):
        p.breaker.failure("eu")  # eu is open
    assert p.after(NOT_IN_REGION, status=404).region == "global"
    assert p.after(NOT_IN_REGION, status=404).region == "eu"  # open regions are tried last, not never
    assert p.after(NOT_IN_REGION, status=404).region is None  # no region left: the 404 is the answer
    assert not p.breaker.is_open("us-east5") and not p.breaker.is_open("global")


def test_an_open_circuit_sends_the_first_attempt_elsewhere_until_it_cools_down():
    clock = Clock()
    breaker = CircuitBreaker(CircuitBreakerConfig(failures=2, window_seconds=10, cooldown_seconds=30), clock)
    cfg = RetryConfig()
    for _ in range(2):
        p = RetryPolicy(cfg, ["us-east5", "global"], breaker, random.Random(1))
        assert p.first() == "us-east5"
        assert p.after(RETRYABLE_STATUS, status=500).region == "global"
        p.after(ANSWERED, status=200)
    assert RetryPolicy(cfg, ["us-east5", "global"], breaker, random.Random(1)).first() == "global"
    clock.now += 30  # cooled down: one trial goes to the preferred region
    p = RetryPolicy(cfg, ["us-east5", "global"], breaker, random.Random(1))
    assert p.first() == "us-east5"
    p.after(ANSWERED, status=200)
    assert breaker.state() == {}


def test_a_final_5xx_is_passed_on_without_counting_as_a_success():
    clock = Clock()
    p = policy(clock=clock)
    p.first()
    p.breaker.failure("us-east5")
    p.after(ANSWERED, status=501)
    p.breaker.failure("us-east5")
    p.breaker.failure("us-east5")
    assert p.breaker.is_open("us-east5")  # the 501 did not reset the failure count
