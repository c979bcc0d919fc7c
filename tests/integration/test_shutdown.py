"""Stopping the service: Ctrl-C on `make run` is quick, and a SIGTERMed worker (Cloud Run
taking an instance away) sends the replies it holds before it leaves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from devtools import payloads
from devtools.devstack import (
    QUICK_STOP_ENV,
    ROOT,
    development_server_command,
    free_port,
)
from service.whatsapp.webhook import sign
from tests.support.servers import gunicorn
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import wait_for_replies


def _hello(wa_id: str) -> tuple[bytes, dict[str, str]]:
    message = payloads.text_message("hello")
    raw = payloads.encode(payloads.envelope([payloads.message_value(wa_id, message)]))
    return raw, {"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, raw)}


def _wait_ready(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the development server did not start"
        time.sleep(0.2)


def test_ctrl_c_stops_the_development_server_within_5_seconds_with_requests_in_flight(
    config, stack, tmp_path
):
    """`make run` in a terminal: Ctrl-C sends SIGINT to the whole process group. A request
    still in flight (here a client that never finishes its body) and a reply being sent must
    not hold the server for gunicorn's graceful timeout and end in a SIGKILL."""
    port = free_port()
    own_graph = f"http://127.0.0.1:{port}/dev/graph/v21.0"
    env = {
        **os.environ,
        **config.replace(app_env="development", graph_api_url=own_graph).to_env(),
        "LOCAL_KEYSET_PATH": str(tmp_path / "dev-keyset.json"),
        **QUICK_STOP_ENV,
    }
    env.pop("KMS_KEY_URI", None)
    log = tmp_path / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            development_server_command(port),
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives `make run`
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, log)
        stuck = socket.create_connection(("127.0.0.1", port))
        stuck.sendall(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        raw, headers = _hello("34612000123")
        assert requests.post(f"{base}/webhook", data=raw, headers=headers, timeout=10).ok
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=15)
        took = time.monotonic() - started
        stuck.close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = log.read_text(errors="replace")
    assert took < 5, f"the server took {took:.1f} s to stop:\n{output[-2000:]}"
    assert "SIGKILL" not in output


@pytest.mark.parametrize("latency", [1.0])
def test_a_sigtermed_worker_sends_the_replies_it_holds_before_it_exits(
    config, components, fake_graph, tmp_path, latency
):
    """Cloud Run sends SIGTERM and waits 10 s: the webhook already answered Meta, so the reply
    it queued must go out during the drain rather than wait for a lease to end."""
    fake_graph.set_latency(latency)
    wa_id = "34612000124"
    with gunicorn(config, tmp_path / "gunicorn.log", workers=1) as base:
        fake_graph.customer_wrote(wa_id)
        raw, headers = _hello(wa_id)
        assert requests.post(f"{base}/webhook", data=raw, headers=headers, timeout=10).ok
        # Still on its way (Meta answers after a second) when SIGTERM comes.
        assert all(sent["answered_at"] > time.time() for sent in fake_graph.messages_to(wa_id))
    # The context manager sent SIGTERM and waited for gunicorn to exit.
    assert len(wait_for_replies(fake_graph, wa_id, 1, within=1)) == 1
    stored = components.repos.conversations.raw(wa_id)
    assert stored["outbox_pending"] == 0 and len(stored["sent"]) == 1
    log = (tmp_path / "gunicorn.log").read_text(errors="replace")
    assert "SIGKILL" not in log
