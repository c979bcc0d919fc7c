from service.ratelimit import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_may_try_until_it_reaches_the_limit():
    limiter = FailureLimiter(max_failures=3, window_seconds=60, clock=Clock())
    for _ in range(2):
        limiter.record_failure("203.0.113.7")
    assert limiter.retry_after("203.0.113.7") is None
    limiter.record_failure("203.0.113.7")
    assert limiter.retry_after("203.0.113.7") == 60


def test_the_wait_ends_when_old_failures_leave_the_window():
    clock = Clock()
    limiter = FailureLimiter(max_failures=2, window_seconds=60, clock=clock)
    limiter.record_failure("a")
    clock.now += 30
    limiter.record_failure("a")
    assert limiter.retry_after("a") == 30
    clock.now += 31
    assert limiter.retry_after("a") is None


def test_other_addresses_are_not_affected():
    limiter = FailureLimiter(max_failures=1, window_seconds=60, clock=Clock())
    limiter.record_failure("a")
    assert limiter.retry_after("a") is not None
    assert limiter.retry_after("b") is None


def test_memory_stays_bounded_under_a_spray_of_addresses():
    limiter = FailureLimiter(max_failures=5, clock=Clock(), max_addresses=100)
    for index in range(1000):
        limiter.record_failure(f"10.0.{index // 256}.{index % 256}")
    assert len(limiter._failures) <= 100
