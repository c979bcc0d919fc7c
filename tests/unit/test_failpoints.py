import subprocess
import sys
import threading
import time

import pytest

from service.shell.failpoints import FailpointError, Failpoints, spec_problems


def test_no_spec_arms_nothing_and_every_point_passes():
    failpoints = Failpoints(None)
    assert not failpoints.armed
    for _ in range(3):
        failpoints.hit("conversation.after_commit")


def test_a_raise_failpoint_fires_every_time_without_a_count():
    failpoints = Failpoints("conversation.before_commit:raise")
    for _ in range(2):
        with pytest.raises(FailpointError, match="conversation.before_commit"):
            failpoints.hit("conversation.before_commit")
    failpoints.hit("conversation.after_commit")  # other points pass


def test_a_counted_failpoint_fires_only_the_nth_time():
    failpoints = Failpoints("conversation.after_commit:raise@3, conversation.before_commit:raise@1")
    failpoints.hit("conversation.after_commit")
    failpoints.hit("conversation.after_commit")
    with pytest.raises(FailpointError, match="time 3"):
        failpoints.hit("conversation.after_commit")
    failpoints.hit("conversation.after_commit")
    with pytest.raises(FailpointError):
        failpoints.hit("conversation.before_commit")


def test_a_kill_failpoint_ends_the_process_with_sigkill():
    code = (
        "from service.shell.failpoints import Failpoints\n"
        "Failpoints('conversation.archive_stored:kill').hit('conversation.archive_stored')\n"
        "print('survived')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == -9
    assert "survived" not in result.stdout


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("conversation.after_commit", "is not point:action"),
        ("conversation.after_comit:kill", "unknown point"),
        ("conversation.after_commit:explode", "unknown action"),
        ("conversation.after_commit:kill@0", "is not point:action"),
    ],
)
def test_a_malformed_spec_is_refused(spec, complaint):
    assert any(complaint in problem for problem in spec_problems(spec))
    with pytest.raises(ValueError, match=complaint):
        Failpoints(spec)


def test_a_pause_holds_the_thread_until_released():
    failpoints = Failpoints("export.building:pause")
    done = threading.Event()

    def reach() -> None:
        failpoints.hit("export.building")
        done.set()

    thread = threading.Thread(target=reach)
    thread.start()
    assert failpoints.wait_until_reached("export.building", timeout=5)
    assert not done.wait(0.3)  # still held
    failpoints.release("export.building")
    assert done.wait(5)
    thread.join()
    failpoints.hit("export.building")  # released for good: later arrivals pass at once


def test_a_pause_nobody_releases_ends_after_its_seconds():
    failpoints = Failpoints("export.building:pause=0.2")
    began = time.monotonic()
    failpoints.hit("export.building")
    assert 0.2 <= time.monotonic() - began < 5


def test_waiting_for_a_point_not_reached_gives_up_after_the_timeout():
    failpoints = Failpoints("export.building:pause")
    assert not failpoints.wait_until_reached("export.building", timeout=0.1)


def test_only_a_pause_takes_seconds():
    assert spec_problems("export.building:pause=1.5@2") == []
    [problem] = spec_problems("export.building:raise=2")
    assert "only pause takes =SECONDS" in problem
