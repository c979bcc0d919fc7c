import os
import signal
import time

from devtools.devstack import LocalStack
from service.shell.components import build_backend_readiness
from service.shell.readiness import FAILING_FOR_SECONDS, READY_FOR_SECONDS
from tests.support.servers import eventually_ready


def test_healthz_answers_while_the_process_runs(client):
    assert client.get("/healthz").status_code == 200


def test_readyz_is_ready_when_every_dependency_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["firestore"] == "ok"
    assert response.json["checks"]["storage"] == "ok"


def test_readyz_names_firestore_when_the_emulator_is_down(client, stack: LocalStack):
    stack.firestore.stop()
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json["checks"]["firestore"] != "ok"
        assert response.json["checks"]["storage"] == "ok"
    finally:
        stack.firestore.start()
    # The gRPC channel reconnects with backoff, so readiness returns within seconds, not at once.
    assert eventually_ready(client)


def test_readyz_names_storage_when_fake_gcs_is_down(client, stack: LocalStack):
    stack.gcs.stop()
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json["checks"]["storage"] != "ok"
    finally:
        stack.gcs.start()
    # fake-gcs-server keeps buckets in memory: a restart loses them, as a new bucket would.
    assert client.get("/readyz").json["checks"]["storage"] == "bucket not found"


def test_readyz_probes_the_backends_once_per_window(client, components, stack: LocalStack):
    """Within the window a second /readyz reaches neither backend: with Firestore frozen it
    still answers at once from the first probe; after the window it probes and sees it."""
    clock = [0.0]
    components.backend_readiness = build_backend_readiness(components.repos, lambda: clock[0])
    assert client.get("/readyz").status_code == 200
    emulator = stack.firestore.process
    os.killpg(emulator.pid, signal.SIGSTOP)
    try:
        clock[0] = READY_FOR_SECONDS - 0.1
        started = time.monotonic()
        cached = client.get("/readyz")
        assert cached.status_code == 200 and time.monotonic() - started < 1.0
        clock[0] = READY_FOR_SECONDS + 0.1
        probed = client.get("/readyz")
        assert probed.status_code == 503 and probed.json["checks"]["firestore"] != "ok"
        clock[0] += FAILING_FOR_SECONDS - 0.1
        assert client.get("/readyz").status_code == 503  # a failure is cached too, shorter
    finally:
        os.killpg(emulator.pid, signal.SIGCONT)
    components.backend_readiness = build_backend_readiness(components.repos)  # the real clock
    assert eventually_ready(client)
