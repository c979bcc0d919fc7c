"""Shared set-up for benchmarks: the same local stack the tests use, started by the bench."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devtools import devstack, payloads
from devtools.devstack import LocalStack
from service.conversation.flow.engine import advance
from service.conversation.flow.questionnaire import load_questionnaire
from service.domain.identity import PatientIdentity
from service.shell.components import Components, build_components
from service.shell.config import Config
from service.whatsapp.graph import addressed, reply_payload
from service.whatsapp.webhook import parse_payload, sign
from tests.support.fakes.kms import FakeKms

PROJECT_ID = "intake-bench"
KMS_KEY = f"projects/{PROJECT_ID}/locations/global/keyRings/bench/cryptoKeys/kek"


@contextlib.contextmanager
def bench_stack() -> Iterator[tuple[LocalStack, FakeKms, Config]]:
    """Start the emulators and the fake KMS; yield a config pointing at them."""
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        with LocalStack(Path(folder)) as stack, FakeKms() as kms:
            kms.create_key(KMS_KEY)
            os.environ.update(stack.env)
            os.environ["GOOGLE_CLOUD_PROJECT"] = PROJECT_ID
            config = Config(
                app_env="test",
                project_id=PROJECT_ID,
                archive_bucket="bench-archive",
                firestore_emulator_host=stack.env["FIRESTORE_EMULATOR_HOST"],
                storage_emulator_host=stack.env["STORAGE_EMULATOR_HOST"],
                kms_key_uri=f"gcp-kms://{KMS_KEY}",
                kms_endpoint=kms.endpoint,
            )
            yield stack, kms, config


def fresh_components(config: Config) -> Components:
    components = build_components(config)
    components.repos.ensure_bucket()
    if components.repos.bucket.blob(config.tink_keyset).exists():
        components.keys.keyring()
    else:
        components.keys.init()
    return components


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- simulated Meta and patients (bench/webhook.py, bench/soak.py) ------------------------------
WEBHOOK_SECRET = Config().whatsapp_app_secret  # the development app secret the stack runs with


def inbound_message(kind: str, value: str, timestamp: int) -> dict:
    """A Meta-shaped message: "text" typed, a reply "button" pressed, or a "list" row picked."""
    if kind == "text":
        return payloads.text_message(value, timestamp=timestamp)
    if kind == "button":
        return payloads.button_reply(value, value, timestamp=timestamp)
    if kind == "list":
        return payloads.list_reply(value, value, timestamp=timestamp)
    raise ValueError(f"unknown message kind {kind!r}")


def signed_webhook(wa_id: str, message: dict) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers Meta posts for one patient message."""
    raw = payloads.encode(payloads.envelope([payloads.message_value(wa_id, message)]))
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign(WEBHOOK_SECRET, raw),
    }
    return raw, headers


@dataclass
class Replay:
    """What the flow engine itself answers to a patient's messages (the bench's oracle)."""

    replies: list[list[dict]] = field(default_factory=list)  # Graph bodies, per message
    status: str | None = None
    records: list[dict] = field(default_factory=list)  # what each "archive" effect held


def replay(wa_id: str, raws: list[bytes], record_id: str) -> Replay:
    """Run the pure engine over the webhook bodies, parsed as the service parses them.

    `record_id` stands for every fresh record id the service would draw: only the submitted
    form's id shows in a reply (its reference code), so pass the id that was archived.
    """
    questionnaire, state, result = load_questionnaire("1"), None, Replay()
    for raw in raws:
        replies: list[dict] = []
        for message in parse_payload(raw).messages:
            step = advance(questionnaire, state, message.inbound, message.timestamp, record_id)
            state = step.state
            patient = PatientIdentity(phone=wa_id)
            replies += [addressed(reply_payload(reply), patient) for reply in step.replies]
            result.records += [e.record for e in step.effects if e.kind == "archive"]
        result.replies.append(replies)
    result.status = state.status if state else None
    return result


def quantile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the values lie (nearest rank); 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@contextlib.contextmanager
def gcs_filesystem_backend(root: Path) -> Iterator[None]:
    """Make LocalStack start fake-gcs-server with its filesystem backend under `root`.

    The memory backend slows down as objects accumulate and loses everything on a restart;
    the filesystem one stays flat and keeps the bucket across a stop and start.
    """
    make_memory_emulator = devstack.gcs_emulator

    def make_filesystem_emulator(port: int, log_dir: Path) -> devstack.Emulator:
        emulator = make_memory_emulator(port, log_dir)
        at = emulator.command.index("-backend")
        emulator.command[at + 1 : at + 2] = ["filesystem", "-filesystem-root", str(root)]
        return emulator

    devstack.gcs_emulator = make_filesystem_emulator  # LocalStack looks it up when built
    try:
        yield
    finally:
        devstack.gcs_emulator = make_memory_emulator
