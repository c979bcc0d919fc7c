"""The readiness cache: one probe per window, shorter for failures, one prober at a time."""

from __future__ import annotations

import threading

from service.shell.readiness import CachedProbe

READY = {"firestore": None, "storage": None}
FAILING = {"firestore": "ServiceUnavailable", "storage": None}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingProbe:
    def __init__(self, *answers: dict) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


def test_two_checks_within_the_window_probe_once_and_a_check_after_it_probes_again():
    clock, probe = Clock(), CountingProbe(READY)
    cache = CachedProbe(probe, clock, ready_for=5.0, failing_for=1.0)
    assert cache.check() == READY
    clock.now += 4.9
    assert cache.check() == READY
    assert probe.calls == 1
    clock.now += 0.2
    assert cache.check() == READY
    assert probe.calls == 2


def test_a_failing_answer_is_kept_for_the_shorter_window_only():
    clock, probe = Clock(), CountingProbe(FAILING, READY)
    cache = CachedProbe(probe, clock, ready_for=5.0, failing_for=1.0)
    assert cache.check() == FAILING
    clock.now += 0.5
    assert cache.check() == FAILING
    assert probe.calls == 1
    clock.now += 0.6
    assert cache.check() == READY
    assert probe.calls == 2


def test_callers_during_a_probe_answer_from_the_last_result_without_probing():
    clock = Clock()
    started, release = threading.Event(), threading.Event()
    calls = []

    def probe() -> dict:
        calls.append(1)
        if len(calls) == 2:  # the second probe hangs, as against a frozen Firestore
            started.set()
            release.wait(5)
            return FAILING
        return READY

    cache = CachedProbe(probe, clock, ready_for=5.0, failing_for=1.0)
    assert cache.check() == READY
    clock.now += 10
    prober = threading.Thread(target=cache.check)
    prober.start()
    assert started.wait(5)
    assert [cache.check() for _ in range(3)] == [READY] * 3  # at once, from the last result
    release.set()
    prober.join(5)
    assert len(calls) == 2
    assert cache.check() == FAILING


def test_a_caller_cannot_change_the_cached_answer():
    cache = CachedProbe(CountingProbe(READY), Clock())
    cache.check()["firestore"] = "tampered"
    assert cache.check() == READY
