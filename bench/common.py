"""Shared set-up for benchmarks: the same local stack the tests use, started by the bench."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

from service.components import Components, build_components
from service.config import Config
from service.devstack import LocalStack
from tests.fakes.kms import FakeKms

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
