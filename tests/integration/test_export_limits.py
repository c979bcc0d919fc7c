"""Exports running at once are limited per account and per process, so that a request thread
is always left for Meta's webhook. Real threads (and a real gunicorn) against the emulators;
an export is held where it has taken its slot by the `export.building` failpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import requests

from devtools import payloads
from service.accounts import providers as provider_service
from service.exports.slots import RETRY_AFTER_SECONDS, ExportSlots
from service.shell.failpoints import Failpoints
from service.whatsapp.webhook import sign
from tests.support.records import make_record
from tests.support.servers import gunicorn
from tests.support.whatsapp import wait_for_replies

POINT = "export.building"


def _token(components, name: str) -> dict[str, str]:
    token = provider_service.create_provider(components.repos.providers, name).token
    return {"Authorization": f"Bearer {token}"}


class Exports:
    """Start exports in other threads, each through its own test client of the same app."""

    def __init__(self, app, pool: ThreadPoolExecutor, failpoints: Failpoints) -> None:
        self.app, self.pool, self.failpoints = app, pool, failpoints

    def start(self, headers: dict[str, str]) -> Future:
        client = self.app.test_client()
        return self.pool.submit(client.get, "/extractData", headers=headers)

    def start_and_hold(self, headers: dict[str, str], holding: int) -> Future:
        """Start an export and wait until `holding` exports in all are paused with a slot."""
        started = self.start(headers)
        assert self.failpoints.wait_until_reached(POINT, holding), "the export never started"
        return started


@pytest.fixture
def exports(app, components) -> Iterator[Exports]:
    saved = components.failpoints, components.export_slots
    components.failpoints = Failpoints(f"{POINT}:pause")
    components.export_slots = ExportSlots(per_process=2, per_account=1)
    with ThreadPoolExecutor(4) as pool:
        try:
            yield Exports(app, pool, components.failpoints)
        finally:
            components.failpoints.release(POINT)  # before the pool waits for its threads
    components.failpoints, components.export_slots = saved


def _assert_refused(response, message: str) -> None:
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json == {
        "error": {"code": "rate_limited", "message": response.json["error"]["message"]}
    }
    assert message in response.json["error"]["message"]


def test_a_second_export_of_an_account_gets_429_with_retry_after_until_the_first_finishes(
    client, components, exports
):
    from service.archive.records import archive_record

    archive_record(components, make_record())
    north = _token(components, "North Clinic")
    first = exports.start_and_hold(north, holding=1)
    _assert_refused(client.get("/extractData", headers=north), "this account already has")
    assert not first.done()
    exports.failpoints.release(POINT)
    finished = first.result(timeout=60)
    assert (finished.status_code, finished.json["records"]) == (200, 1)
    again = client.get("/extractData", headers=north)
    assert again.status_code == 200
    outcomes = [
        (event.outcome, event.details.get("reason"))
        for event in components.repos.audit.list(action="export.create")
    ]
    assert sorted(outcomes, key=str) == sorted(
        [("failure", "rate_limited"), ("success", None), ("success", None)], key=str
    )


def test_past_the_process_limit_a_third_account_gets_429_until_a_slot_is_free(
    client, components, exports
):
    north, south, east = (_token(components, name) for name in ("North", "South", "East"))
    held = [exports.start_and_hold(north, holding=1), exports.start_and_hold(south, holding=2)]
    _assert_refused(client.get("/extractData", headers=east), "too many exports are running")
    exports.failpoints.release(POINT)
    assert [future.result(timeout=60).status_code for future in held] == [200, 200]
    assert client.get("/extractData", headers=east).status_code == 200
    assert components.export_slots.running == 0


def test_an_export_that_fails_gives_its_slot_back(client, components):
    saved = components.failpoints
    components.failpoints = Failpoints(f"{POINT}:raise@1")
    try:
        north = _token(components, "North Clinic")
        failed = client.get("/extractData", headers=north)
        assert (failed.status_code, failed.json["error"]["code"]) == (500, "internal")
        assert client.get("/extractData", headers=north).status_code == 200
    finally:
        components.failpoints = saved
    assert components.export_slots.running == 0


def test_an_export_stopped_by_a_bad_record_gives_its_slot_back(client, components):
    from service.archive.records import archive_record

    entry = archive_record(components, make_record())
    blob = components.repos.bucket.blob(entry.object_name)
    data = bytearray(blob.download_as_bytes())
    data[-1] ^= 1
    blob.upload_from_string(bytes(data))
    north = _token(components, "North Clinic")
    for _ in range(2):  # the second is refused by the same record, not by a slot still held
        response = client.get("/extractData", headers=north)
        assert (response.status_code, response.json["error"]["code"]) == (500, "record_integrity")
    assert components.export_slots.running == 0


def _hello(wa_id: str) -> bytes:
    message = payloads.text_message("hello", timestamp=int(time.time()))
    return payloads.encode(payloads.envelope([payloads.message_value(wa_id, message)]))


def test_the_webhook_answers_while_exports_hold_every_slot_of_a_gunicorn_worker(
    config, components, fake_graph, tmp_path: Path
):
    """One worker with 3 threads and 2 export slots: two exports paused with their slots, a
    third refused at once, and Meta's webhook still answered before either export ends."""
    held_for = 15.0
    serving = config.replace(export_concurrency=2, failpoints=f"{POINT}:pause={held_for:g}")
    north, south, east = (_token(components, name) for name in ("North", "South", "East"))
    with (
        ThreadPoolExecutor(4) as pool,
        gunicorn(serving, tmp_path / "gunicorn.log", workers=1, threads=3) as base,
    ):

        def hold_one(headers: dict[str, str]) -> Future:
            """Ask twice at once for an account's export: one is refused, the other held."""
            pair = [
                pool.submit(requests.get, f"{base}/extractData", headers=headers, timeout=60)
                for _ in range(2)
            ]
            done, _ = wait(pair, timeout=held_for / 2, return_when=FIRST_COMPLETED)
            assert done, "neither export was refused: nothing limits exports running at once"
            [refused] = done
            assert refused.result().status_code == 429
            assert refused.result().headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
            return next(future for future in pair if future is not refused)

        held = [hold_one(north), hold_one(south)]
        refused = requests.get(f"{base}/extractData", headers=east, timeout=5)
        assert refused.status_code == 429 and "too many exports" in refused.text

        wa_id = "34612000077"
        fake_graph.customer_wrote(wa_id)
        raw = _hello(wa_id)
        signature = sign(config.whatsapp_app_secret, raw)
        webhook = requests.post(
            f"{base}/webhook",
            data=raw,
            timeout=held_for,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
        )
        assert webhook.status_code == 200
        assert not any(future.done() for future in held), "the exports ended first"
        assert len(wait_for_replies(fake_graph, wa_id, 1)) == 1  # the patient got the answer
        assert [future.result().status_code for future in held] == [200, 200]
