from service.devstack import LocalStack
from tests.integration.servers import eventually_ready


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
