"""Run the service under gunicorn, as in production, against the test stack."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from devtools.devstack import GUNICORN_CONF, ROOT, free_port
from service.shell.app import create_app
from service.shell.config import Config


@contextlib.contextmanager
def gunicorn(
    config: Config,
    log_path: Path,
    workers: int = 1,
    threads: int = 4,
    command: str | None = None,
    image_env: dict[str, str] | None = None,
    port: int | None = None,
    app: str = "service.wsgi:app",
) -> Iterator[str]:
    """Start gunicorn (or the given shell command line) and yield its base URL.

    Pass `port` when the config must name the server's own address before it starts (the
    simulator's GRAPH_API_URL points at the server itself), and `app` to serve another WSGI
    entry point (`PRODUCTION_APP`).
    """
    port = port or free_port()
    env = {
        **os.environ,
        **(image_env or {}),
        **config.to_env(),
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_THREADS": str(threads),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    argv = (
        ["/bin/sh", "-c", command]
        if command
        else [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, "--bind", f"127.0.0.1:{port}",
              "--workers", str(workers), "--threads", str(threads), app]
    )  # fmt: skip
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/healthz", timeout=2)
                break
            except (requests.ConnectionError, requests.Timeout):
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "gunicorn did not start in 60 s"
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextlib.contextmanager
def simulator_server(config: Config, log_path: Path) -> Iterator[str]:
    """Serve the app as `make run` does, its replies going to its own fake Graph endpoint.

    One worker (the simulator's memory is per process) with 8 threads: a message from the page
    holds one thread while the webhook it calls holds another and each reply a third.
    """
    port = free_port()
    own_graph = f"http://127.0.0.1:{port}/dev/graph/v21.0"
    with gunicorn(config.replace(graph_api_url=own_graph), log_path, threads=8, port=port) as base:
        yield base


def eventually_ready(client, within: float = 30.0) -> bool:
    """Poll /readyz until it answers 200: gRPC reconnects with backoff after an outage."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return True
        time.sleep(0.25)
    return False


# gunicorn calls this factory in each worker: see production_app.
PRODUCTION_APP = "tests.support.servers:production_app()"


def production_app():
    """Build the app as production does (APP_ENV=production) against the local emulators.

    Config.from_env refuses emulator hosts and plain-http endpoints in production, as it should
    for a deployment; here they stand in for Google Cloud, so the environment is read as `test`
    and then switched to production, like the in-process production tests do.
    """
    config = Config.from_env({**os.environ, "APP_ENV": "test"})
    return create_app(config.replace(app_env="production"))
