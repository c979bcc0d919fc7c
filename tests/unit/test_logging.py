import json
import logging

import pytest

from service.shell.logging import JsonFormatter, mask_phone


@pytest.mark.parametrize(
    ("phone", "masked"),
    [("447700900123", "********0123"), ("+34 612 345 678", "*******5678"), ("", "")],
)
def test_phone_numbers_are_masked_to_their_last_four_digits(phone, masked):
    assert mask_phone(phone) == masked


def _format(message: str, **extra: object) -> dict:
    record = logging.makeLogRecord({"msg": message, "levelname": "INFO", **extra})
    return json.loads(JsonFormatter("proj").format(record))


def test_a_log_line_is_one_json_object_with_severity_and_message():
    entry = _format("reply sent", conversation_step="name")
    assert entry["severity"] == "INFO"
    assert entry["message"] == "reply sent"
    assert entry["conversation_step"] == "name"


def test_a_phone_number_that_slips_into_a_log_line_is_masked():
    entry = _format("inbound from 447700900123", wa_id="34612345678")
    line = json.dumps(entry)
    assert "447700900123" not in line and "34612345678" not in line
    assert "********0123" in entry["message"]


def test_dates_and_latencies_are_not_mistaken_for_phone_numbers():
    entry = _format("took 12.345 ms on 2026-11-25")
    assert entry["message"] == "took 12.345 ms on 2026-11-25"
