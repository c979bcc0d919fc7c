"""The fake Graph API answers over HTTP as Meta's Cloud API does, limits and errors included."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.support.fakes.graph import FakeGraphApi
from tests.support.graph_bodies import INVALID_BODIES

TOKEN = "test-access-token"
PHONE_NUMBER_ID = "109876543210"
PATIENT = "+1 555-010-0001"
PATIENT_WA_ID = "15550100001"
DAY = 24 * 60 * 60


class ManualClock:
    """A clock the test moves by hand, so time-based limits need no sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clean_data() -> None:
    """Replace the package's emulator clean-up: the fake Graph API touches no Google service."""


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGraphApi]:
    with FakeGraphApi(TOKEN, PHONE_NUMBER_ID, approved_templates=["intake_start"]) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeGraphApi) -> FakeGraphApi:
    server.reset()
    return server


@pytest.fixture
def make_fake() -> Iterator[Callable[..., FakeGraphApi]]:
    started: list[FakeGraphApi] = []

    def start(**knobs: Any) -> FakeGraphApi:
        fake = FakeGraphApi(TOKEN, PHONE_NUMBER_ID, **knobs)
        fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def send(
    fake: FakeGraphApi,
    body: object,
    *,
    token: str | None = TOKEN,
    phone_number_id: str = PHONE_NUMBER_ID,
    timeout: float = 5.0,
) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.post(
        f"{fake.base_url}/{phone_number_id}/messages", json=body, headers=headers, timeout=timeout
    )


def text(body: str = "Hello", to: str = PATIENT, **extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body},
        **extra,
    }


def template(name: str = "intake_start", language: str = "en_US") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": PATIENT,
        "type": "template",
        "template": {"name": name, "language": {"code": language}},
    }


def error_of(response: requests.Response) -> dict[str, Any]:
    return response.json()["error"]


# Success


def test_accepted_message_is_answered_with_meta_success_shape(fake: FakeGraphApi) -> None:
    fake.customer_wrote(PATIENT_WA_ID)

    response = send(fake, text())

    assert response.status_code == 200
    answer = response.json()
    assert answer["messaging_product"] == "whatsapp"
    assert answer["contacts"] == [{"input": PATIENT, "wa_id": PATIENT_WA_ID}]
    assert answer["messages"][0]["id"].startswith("wamid.")


BSUID = "ES.1410018717833190"


def by_bsuid(bsuid: str = BSUID) -> dict[str, Any]:
    body = text()
    del body["to"]
    return {**body, "recipient": bsuid}


def test_a_message_to_a_bsuid_is_accepted_inside_that_users_window(fake: FakeGraphApi) -> None:
    fake.customer_wrote(None, user_id=BSUID)

    response = send(fake, by_bsuid())

    assert response.status_code == 200
    assert response.json()["contacts"] == [{"input": BSUID, "user_id": BSUID}]
    assert [m["recipient"] for m in fake.messages_to(None, BSUID)] == [BSUID]


def test_a_message_to_a_bsuid_that_never_wrote_is_outside_the_window(fake: FakeGraphApi) -> None:
    fake.customer_wrote(PATIENT_WA_ID)  # another user's window says nothing about this one

    response = send(fake, by_bsuid())

    assert response.status_code == 400
    assert error_of(response)["code"] == 131047


def test_a_message_with_neither_to_nor_recipient_is_refused(fake: FakeGraphApi) -> None:
    body = text()
    del body["to"]

    response = send(fake, body)

    assert response.status_code == 400
    assert error_of(response)["code"] == 100
    assert fake.messages == []


def test_accepted_message_is_recorded_with_body_wamid_recipient_and_time(
    fake: FakeGraphApi,
) -> None:
    fake.customer_wrote(PATIENT_WA_ID)
    before = time.time()

    wamid = send(fake, text("Welcome")).json()["messages"][0]["id"]

    [message] = fake.messages_to(PATIENT)
    assert message["wamid"] == wamid
    assert (message["to"], message["wa_id"]) == (PATIENT, PATIENT_WA_ID)
    assert message["body"]["text"]["body"] == "Welcome"
    assert before <= message["at"] <= time.time()


def test_reply_with_context_is_accepted(fake: FakeGraphApi) -> None:
    fake.customer_wrote(PATIENT_WA_ID)

    response = send(fake, text(context={"message_id": "wamid.inbound"}))

    assert response.status_code == 200
    assert fake.messages[0]["body"]["context"] == {"message_id": "wamid.inbound"}


def test_every_accepted_message_gets_its_own_wamid_even_when_sent_concurrently(
    fake: FakeGraphApi,
) -> None:
    recipients = [f"1555020{index:04d}" for index in range(40)]
    for recipient in recipients:
        fake.customer_wrote(recipient)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda to: send(fake, text(to=to)), recipients))

    assert {response.status_code for response in responses} == {200}
    assert len({message["wamid"] for message in fake.messages}) == 40
    assert len(fake.requests) == 40


# Authentication and addressing


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["missing", "wrong"])
def test_missing_or_wrong_token_is_answered_401_with_code_190(
    fake: FakeGraphApi, token: str | None
) -> None:
    fake.customer_wrote(PATIENT_WA_ID)

    response = send(fake, text(), token=token)

    assert response.status_code == 401
    assert error_of(response)["code"] == 190
    assert error_of(response)["type"] == "OAuthException"
    assert "fbtrace_id" in error_of(response)
    assert fake.messages == []


def test_expired_token_is_answered_190_until_reset(fake: FakeGraphApi) -> None:
    fake.customer_wrote(PATIENT_WA_ID)
    fake.expire_token()

    expired = send(fake, text())
    fake.reset()
    fake.customer_wrote(PATIENT_WA_ID)
    renewed = send(fake, text())

    assert expired.status_code == 401
    assert (error_of(expired)["code"], error_of(expired)["error_subcode"]) == (190, 463)
    assert renewed.status_code == 200


def test_wrong_phone_number_id_is_answered_400_with_code_100(fake: FakeGraphApi) -> None:
    response = send(fake, text(), phone_number_id="999")

    assert response.status_code == 400
    assert error_of(response)["code"] == 100
    assert "'999' does not exist" in error_of(response)["message"]


def test_body_that_is_not_json_is_answered_400_with_code_100(fake: FakeGraphApi) -> None:
    response = requests.post(
        f"{fake.base_url}/{PHONE_NUMBER_ID}/messages",
        data=b"{not json",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 400
    assert error_of(response)["code"] == 100


# Meta's limits on the message body


@pytest.mark.parametrize(
    ("body", "code", "field"), INVALID_BODIES.values(), ids=INVALID_BODIES.keys()
)
def test_body_breaking_a_limit_is_answered_400_with_details_naming_the_field(
    fake: FakeGraphApi, body: object, code: int, field: str
) -> None:
    fake.customer_wrote(PATIENT_WA_ID)

    response = send(fake, body)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == code
    assert error["message"].startswith(f"(#{code}) ")
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert field in error["error_data"]["details"]
    assert fake.messages == []


def test_rejected_requests_are_recorded_with_their_status(fake: FakeGraphApi) -> None:
    fake.customer_wrote(PATIENT_WA_ID)

    send(fake, text("x" * 4097))
    send(fake, text("fine"))

    assert [request["status"] for request in fake.requests] == [400, 200]
    assert fake.requests[0]["body"]["text"]["body"] == "x" * 4097
    assert fake.requests[0]["response"]["error"]["code"] == 100


# The 24-hour customer-service window and templates


def test_free_form_message_to_someone_who_never_wrote_fails_with_131047(
    fake: FakeGraphApi,
) -> None:
    response = send(fake, text())

    assert response.status_code == 400
    assert error_of(response)["code"] == 131047


def test_free_form_message_more_than_24_hours_after_the_patient_wrote_fails_with_131047(
    fake: FakeGraphApi,
) -> None:
    fake.customer_wrote(PATIENT_WA_ID, at=time.time() - DAY - 60)

    response = send(fake, text())

    assert error_of(response)["code"] == 131047


def test_free_form_message_within_24_hours_of_the_patient_writing_is_accepted(
    fake: FakeGraphApi,
) -> None:
    fake.customer_wrote(PATIENT, at=time.time() - DAY + 60)

    assert send(fake, text()).status_code == 200


def test_approved_template_is_accepted_outside_the_window(fake: FakeGraphApi) -> None:
    assert send(fake, template()).status_code == 200


def test_unapproved_template_is_answered_404_with_132001(fake: FakeGraphApi) -> None:
    response = send(fake, template("never_submitted"))

    assert response.status_code == 404
    assert error_of(response)["code"] == 132001
    assert "never_submitted" in error_of(response)["error_data"]["details"]


def test_template_approved_in_one_language_fails_in_another(fake: FakeGraphApi) -> None:
    fake.approve_template("intake_reminder", language="es")

    assert send(fake, template("intake_reminder", "es")).status_code == 200
    assert error_of(send(fake, template("intake_reminder", "en_US")))["code"] == 132001


def test_window_is_not_enforced_when_turned_off(
    make_fake: Callable[..., FakeGraphApi],
) -> None:
    fake = make_fake(enforce_service_window=False)

    assert send(fake, text()).status_code == 200


# Throughput and pair rate limits


def test_throughput_over_the_limit_in_a_sliding_second_is_answered_130429(
    make_fake: Callable[..., FakeGraphApi],
) -> None:
    clock = ManualClock()
    fake = make_fake(throughput_per_second=3, enforce_service_window=False, clock=clock)
    start = clock.now
    for offset, to in [(0.0, "15550000001"), (0.5, "15550000002"), (0.9, "15550000003")]:
        clock.now = start + offset
        assert send(fake, text(to=to)).status_code == 200

    clock.now = start + 0.95
    throttled = send(fake, text(to="15550000004"))
    clock.now = start + 1.0
    after_first_left_window = send(fake, text(to="15550000004"))

    assert throttled.status_code == 429
    assert error_of(throttled)["code"] == 130429
    assert after_first_left_window.status_code == 200


def test_burst_to_one_recipient_beyond_the_pair_limit_fails_with_131056_until_repaid(
    make_fake: Callable[..., FakeGraphApi],
) -> None:
    clock = ManualClock()
    fake = make_fake(
        pair_burst=3, pair_interval_seconds=6.0, enforce_service_window=False, clock=clock
    )
    start = clock.now
    burst = [send(fake, text()).status_code for _ in range(3)]

    over = send(fake, text())
    other_patient = send(fake, text(to="15550000009"))
    clock.now = start + 6.0
    still_blocked = send(fake, text())
    clock.now = start + 18.0
    repaid = send(fake, text())

    assert burst == [200, 200, 200]
    assert over.status_code == 400
    assert error_of(over)["code"] == 131056
    assert other_patient.status_code == 200
    assert error_of(still_blocked)["code"] == 131056
    assert repaid.status_code == 200


def test_one_message_per_interval_to_one_recipient_never_hits_the_pair_limit(
    make_fake: Callable[..., FakeGraphApi],
) -> None:
    clock = ManualClock()
    fake = make_fake(pair_burst=1, enforce_service_window=False, clock=clock)
    statuses = []
    for _ in range(5):
        statuses.append(send(fake, text()).status_code)
        clock.now += 6.0

    assert statuses == [200] * 5


# Fault injection


def test_injected_temporary_errors_fail_the_next_requests_then_clear(fake: FakeGraphApi) -> None:
    fake.customer_wrote(PATIENT_WA_ID)
    fake.fail_next(2, status=503, code=2)

    responses = [send(fake, text()) for _ in range(3)]

    assert [response.status_code for response in responses] == [503, 503, 200]
    assert error_of(responses[0])["code"] == 2
    assert error_of(responses[0])["is_transient"] is True
    assert len(fake.messages) == 1


def test_injected_rate_limit_carries_retry_after(fake: FakeGraphApi) -> None:
    fake.fail_next(1, status=429, code=130429, retry_after=7)

    response = send(fake, text())

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert error_of(response)["code"] == 130429


def test_injected_server_error_defaults_to_500_with_131000(fake: FakeGraphApi) -> None:
    fake.fail_next(1)

    response = send(fake, text())

    assert response.status_code == 500
    assert error_of(response)["code"] == 131000
    assert "Retry-After" not in response.headers


def test_delayed_answer_times_the_client_out_but_the_message_is_still_sent(
    fake: FakeGraphApi,
) -> None:
    fake.customer_wrote(PATIENT_WA_ID)
    fake.delay_next(1, 2.0)

    with pytest.raises(requests.Timeout):
        send(fake, text("first"), timeout=0.2)
    prompt = send(fake, text("second"), timeout=1.0)

    assert prompt.status_code == 200
    assert [message["body"]["text"]["body"] for message in fake.messages] == ["first", "second"]


def test_reset_forgets_messages_faults_and_windows(fake: FakeGraphApi) -> None:
    fake.customer_wrote(PATIENT_WA_ID)
    send(fake, text())
    fake.fail_next(1)

    fake.reset()

    assert fake.messages == [] and fake.requests == []
    assert error_of(send(fake, text()))["code"] == 131047


def test_reset_keeps_approved_templates(fake: FakeGraphApi) -> None:
    fake.approve_template("intake_follow_up")

    fake.reset()

    assert send(fake, template("intake_follow_up")).status_code == 200


def test_server_writes_nothing_to_stderr(
    fake: FakeGraphApi, capfd: pytest.CaptureFixture[str]
) -> None:
    fake.customer_wrote(PATIENT_WA_ID)
    send(fake, text())
    send(fake, text(), token="wrong")

    assert capfd.readouterr().err == ""
