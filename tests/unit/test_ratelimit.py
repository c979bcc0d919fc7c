from service.accounts.ratelimit import FailureLimiter, SharedFailureLimiter, Throttle
from service.errors import UnavailableError


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


# -- the limiter shared through a store (here an in-memory one; Firestore in integration) -------
class MemoryCounter:
    """Stands in for RateLimitRepository: the same atomic counts, and a log of the calls."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, int]] = {}
        self.writes = 0
        self.down = False

    def add(self, key, scope, window_start, expires_at, failures=1, throttled=0):
        if self.down:
            raise UnavailableError("Firestore (rate limits) is unavailable (ServiceUnavailable)")
        self.writes += 1
        doc = self.docs.setdefault(key, {"failures": 0, "throttled": 0})
        doc["failures"] += failures
        doc["throttled"] += throttled
        return doc["failures"], doc["throttled"]

    def failures(self, key):
        if self.down:
            raise UnavailableError("Firestore (rate limits) is unavailable (ServiceUnavailable)")
        return self.docs.get(key, {}).get("failures", 0)


def shared(counter, clock, **kwargs) -> SharedFailureLimiter:
    return SharedFailureLimiter(counter, "test-secret-key", "auth", clock=clock, **kwargs)


def test_two_processes_share_one_limit():
    counter, clock = MemoryCounter(), Clock()
    first, second = shared(counter, clock), shared(counter, clock)
    for index in range(10):
        assert (first if index % 2 else second).record_failure("203.0.113.7") is None
    throttle = first.record_failure("203.0.113.7")
    assert throttle is not None and throttle.first
    again = second.record_failure("203.0.113.7")
    assert isinstance(again, Throttle) and not again.first


def test_a_burst_split_across_a_window_boundary_is_still_caught():
    counter, clock = MemoryCounter(), Clock()
    clock.now = 6000.0 - 3  # three seconds before a window ends
    limiter = shared(counter, clock)
    for _ in range(5):
        assert limiter.record_failure("a") is None
    clock.now += 4
    for _ in range(5):
        assert limiter.record_failure("a") is None
    assert limiter.record_failure("a") is not None


def test_the_wait_is_at_most_one_window_and_then_the_address_may_try_again():
    counter, clock = MemoryCounter(), Clock()
    limiter = shared(counter, clock)
    for _ in range(10):
        limiter.record_failure("a")
    throttle = limiter.record_failure("a")
    assert 1 <= throttle.retry_after <= 60
    clock.now += throttle.retry_after
    assert limiter.record_failure("a") is None


def test_refusals_known_to_a_process_are_counted_in_batches_not_written_one_by_one():
    counter, clock = MemoryCounter(), Clock()
    limiter = shared(counter, clock)
    for _ in range(11):
        limiter.record_failure("a")
    writes = counter.writes
    for _ in range(1000):
        assert limiter.record_failure("a") is not None
    assert counter.writes == writes  # no write per refusal
    clock.now += 6
    limiter.record_failure("a")
    (doc,) = counter.docs.values()
    assert counter.writes == writes + 1
    assert doc["throttled"] == 1 + 1001  # every refusal counted, in one batch


def test_only_the_first_refusal_of_a_window_asks_for_an_audit_summary():
    counter, clock = MemoryCounter(), Clock()
    limiters = [shared(counter, clock) for _ in range(3)]
    for _ in range(10):
        limiters[0].record_failure("a")
    firsts = [limiter.record_failure("a").first for limiter in limiters for _ in range(3)]
    assert firsts.count(True) == 1


def test_the_address_is_stored_only_as_a_keyed_hash():
    counter, clock = MemoryCounter(), Clock()
    limiter = shared(counter, clock)
    limiter.record_failure("203.0.113.7")
    (key,) = counter.docs
    assert "203.0.113.7" not in key
    assert key == limiter.document_id("203.0.113.7")
    other_secret = SharedFailureLimiter(counter, "another-secret", "auth", clock=clock)
    assert other_secret.key("203.0.113.7") != limiter.key("203.0.113.7")


def test_when_the_store_is_down_the_limit_is_per_process_and_never_an_error():
    counter, clock = MemoryCounter(), Clock()
    counter.down = True
    limiter = shared(counter, clock)
    verdicts = [limiter.record_failure("a") for _ in range(12)]
    assert verdicts[:10] == [None] * 10
    assert [verdict.first for verdict in verdicts[10:]] == [True, False]
    assert limiter.record_failure("b") is None


def test_an_ipv6_client_cannot_rotate_through_its_own_64():
    counter, clock = MemoryCounter(), Clock()
    limiter = shared(counter, clock)
    for index in range(10):
        assert limiter.record_failure(f"2001:db8:1:2::{index + 1:x}") is None
    assert limiter.record_failure("2001:db8:1:2:ffff::1") is not None
    assert limiter.record_failure("2001:db8:1:3::1") is None
