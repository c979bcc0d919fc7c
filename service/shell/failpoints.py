"""Test-only failpoints: end the process, raise, or pause at a named point of the code.

Fault tests use them to stop a gunicorn worker at an exact moment, say between the Firestore
commit and the Graph API send, and then check what Meta's redelivery recovers, or to hold a
request where it is (an export that keeps its slot). They are armed from `INTAKE_FAILPOINTS`
(through Config), which production refuses, and cost one truth test of an empty dict when
nothing is armed.

Spec: comma-separated `point:action[=SECONDS][@N]`, e.g. `conversation.after_commit:kill@4`.
`kill` sends SIGKILL to this process (no cleanup, no answer, like an OOM kill); `raise` raises
FailpointError; `pause` blocks the thread until `Failpoints.release` is called in this process
(in-process tests) or SECONDS have passed (default 30, so a pause nobody releases, as in a
gunicorn worker, ends by itself). `@N` fires only the Nth time this process reaches the point
(counted from 1, per process: a worker gunicorn starts again counts afresh); without it, every
time.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from dataclasses import dataclass

ACTIONS = ("kill", "raise", "pause")
DEFAULT_PAUSE_SECONDS = 30.0
# Every point the code reaches; a spec naming another is a typo that would test nothing.
POINTS = (
    "conversation.before_commit",
    "conversation.archive_stored",
    "conversation.after_commit",
    "conversation.after_send",
    "export.building",  # an export holds its slot, nothing read yet
)
_SPEC = re.compile(
    r"^(?P<point>[a-z_.]+):(?P<action>[a-z]+)"
    r"(?:=(?P<seconds>[0-9]+(?:\.[0-9]+)?))?(?:@(?P<nth>[1-9][0-9]*))?$"
)


class FailpointError(RuntimeError):
    """Raised by a `raise` failpoint: an unexpected crash at that point."""


@dataclass(frozen=True)
class _Armed:
    action: str
    nth: int | None
    seconds: float = DEFAULT_PAUSE_SECONDS


def spec_problems(spec: str) -> list[str]:
    """Return what is wrong with a failpoint spec (empty when it is valid)."""
    problems = []
    for part in (item.strip() for item in spec.split(",")):
        match = _SPEC.match(part)
        if match is None:
            problems.append(f"INTAKE_FAILPOINTS: {part!r} is not point:action[@N]")
        elif match["point"] not in POINTS:
            problems.append(f"INTAKE_FAILPOINTS: unknown point {match['point']!r}")
        elif match["action"] not in ACTIONS:
            problems.append(f"INTAKE_FAILPOINTS: unknown action {match['action']!r}")
        elif match["seconds"] is not None and match["action"] != "pause":
            problems.append(f"INTAKE_FAILPOINTS: only pause takes =SECONDS ({part!r})")
    return problems


class Failpoints:
    """The armed failpoints of one process; none by default."""

    def __init__(self, spec: str | None = None) -> None:
        self._armed: dict[str, _Armed] = {}
        self._reached: dict[str, int] = {}
        self._changed = threading.Condition()
        self._released: dict[str, threading.Event] = {}
        if not spec:
            return
        problems = spec_problems(spec)
        if problems:
            raise ValueError("; ".join(problems))
        for part in spec.split(","):
            match = _SPEC.match(part.strip())
            assert match is not None  # checked above
            nth = int(match["nth"]) if match["nth"] else None
            seconds = float(match["seconds"]) if match["seconds"] else DEFAULT_PAUSE_SECONDS
            self._armed[match["point"]] = _Armed(match["action"], nth, seconds)
            self._released[match["point"]] = threading.Event()

    @property
    def armed(self) -> bool:
        return bool(self._armed)

    def hit(self, point: str) -> None:
        """Mark that the code reached `point`; fire the action armed there, if it is due."""
        if not self._armed:
            return
        armed = self._armed.get(point)
        if armed is None:
            return
        with self._changed:
            self._reached[point] = count = self._reached.get(point, 0) + 1
            self._changed.notify_all()
        if armed.nth is not None and count != armed.nth:
            return
        if armed.action == "pause":
            self._released[point].wait(armed.seconds)
            return
        if armed.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise FailpointError(f"failpoint {point} reached (time {count})")

    def wait_until_reached(self, point: str, times: int = 1, timeout: float = 10.0) -> bool:
        """Wait until the point has been reached `times` times; False if it was not in time."""
        with self._changed:
            return self._changed.wait_for(lambda: self._reached.get(point, 0) >= times, timeout)

    def release(self, point: str) -> None:
        """End every pause at `point`, those under way and those to come."""
        self._released[point].set()
