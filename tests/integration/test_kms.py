"""KmsAead through the real google-cloud-kms client against the protocol-level fake KMS."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import google_crc32c
import pytest
import tink
from google.api_core import exceptions as core_exceptions
from google.cloud import kms_v1
from tink import aead, secret_key_access
from tink.proto import tink_pb2

from service.keys.kms import KmsAead, KmsUnavailableError, make_kms_client
from tests.support.fakes.kms import FakeKms

KEY_NAME = "projects/intake-test/locations/global/keyRings/intake/cryptoKeys/keyset-kek"
OTHER_KEY_NAME = "projects/intake-test/locations/global/keyRings/intake/cryptoKeys/other"
KEY_URI = f"gcp-kms://{KEY_NAME}"
KEYSET_AD = b"keys/intake-keyset.json"
SHORT_TIMEOUT = 1.0

KeysetFormat = tuple[
    Callable[[tink.KeysetHandle, aead.Aead, bytes], bytes | str],
    Callable[[bytes | str, aead.Aead, bytes], tink.KeysetHandle],
]
KEYSET_FORMATS: dict[str, KeysetFormat] = {
    "binary": (
        tink.proto_keyset_format.serialize_encrypted,
        tink.proto_keyset_format.parse_encrypted,
    ),
    "json": (
        tink.json_proto_keyset_format.serialize_encrypted,
        tink.json_proto_keyset_format.parse_encrypted,
    ),
}


@pytest.fixture(scope="module", autouse=True)
def _register_aead() -> None:
    aead.register()


@pytest.fixture
def fresh_kms() -> Iterator[FakeKms]:
    with FakeKms() as fake:
        fake.create_key(KEY_NAME)
        fake.create_key(OTHER_KEY_NAME)
        yield fake


@pytest.fixture
def kms_client(fresh_kms: FakeKms) -> Iterator[kms_v1.KeyManagementServiceClient]:
    client = make_kms_client(fresh_kms.endpoint)
    yield client
    client.transport.close()


@pytest.fixture
def kms_aead(kms_client: kms_v1.KeyManagementServiceClient) -> KmsAead:
    return KmsAead(kms_client, KEY_URI)


@pytest.fixture
def impatient_kms_aead(kms_client: kms_v1.KeyManagementServiceClient) -> KmsAead:
    return KmsAead(kms_client, KEY_URI, timeout=SHORT_TIMEOUT)


def flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def test_decrypt_returns_what_encrypt_was_given(kms_aead: KmsAead) -> None:
    ciphertext = kms_aead.encrypt(b"patient record", b"record-1")

    assert b"patient record" not in ciphertext
    assert kms_aead.decrypt(ciphertext, b"record-1") == b"patient record"


def test_encrypting_twice_gives_different_ciphertexts(kms_aead: KmsAead) -> None:
    assert kms_aead.encrypt(b"same", b"") != kms_aead.encrypt(b"same", b"")


def test_decrypt_with_other_associated_data_fails(kms_aead: KmsAead) -> None:
    ciphertext = kms_aead.encrypt(b"patient record", b"record-1")

    with pytest.raises(tink.TinkError, match="Decryption failed"):
        kms_aead.decrypt(ciphertext, b"record-2")


def test_tampered_ciphertext_fails_to_decrypt(kms_aead: KmsAead) -> None:
    ciphertext = kms_aead.encrypt(b"patient record", b"record-1")

    with pytest.raises(tink.TinkError, match="Decryption failed"):
        kms_aead.decrypt(flip_last_bit(ciphertext), b"record-1")


def test_ciphertext_of_one_key_does_not_decrypt_under_another(
    kms_client: kms_v1.KeyManagementServiceClient, kms_aead: KmsAead
) -> None:
    other_aead = KmsAead(kms_client, OTHER_KEY_NAME)
    ciphertext = kms_aead.encrypt(b"patient record", b"")

    with pytest.raises(tink.TinkError, match="Decryption failed"):
        other_aead.decrypt(ciphertext, b"")


def test_unknown_key_is_reported_as_not_found(
    kms_client: kms_v1.KeyManagementServiceClient,
) -> None:
    missing = KmsAead(kms_client, "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/gone")

    with pytest.raises(tink.TinkError, match="404 .*cryptoKeys/gone' was not found"):
        missing.encrypt(b"x", b"")


def test_key_uri_must_name_a_crypto_key(kms_client: kms_v1.KeyManagementServiceClient) -> None:
    with pytest.raises(tink.TinkError, match="must look like gcp-kms://projects/"):
        KmsAead(kms_client, "gcp-kms://projects/p/locations/l/keyRings/r")


def test_kms_errors_never_carry_the_plaintext(
    kms_client: kms_v1.KeyManagementServiceClient,
) -> None:
    missing = KmsAead(kms_client, "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/gone")

    with pytest.raises(tink.TinkError) as raised:
        missing.encrypt(b"Jane Doe 1980-02-29", b"")

    messages = [str(raised.value), str(raised.value.__cause__)]
    assert not any("Jane" in message for message in messages)


@pytest.mark.parametrize("keyset_format", KEYSET_FORMATS.values(), ids=KEYSET_FORMATS.keys())
def test_wrapped_keyset_unwraps_to_the_same_keys(
    kms_aead: KmsAead, keyset_format: KeysetFormat
) -> None:
    serialize_encrypted, parse_encrypted = keyset_format
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)

    wrapped = serialize_encrypted(handle, kms_aead, KEYSET_AD)
    unwrapped = parse_encrypted(wrapped, kms_aead, KEYSET_AD)

    record = handle.primitive(aead.Aead).encrypt(b"patient record", b"record-1")
    assert unwrapped.primitive(aead.Aead).decrypt(record, b"record-1") == b"patient record"


def test_wrapped_keyset_does_not_contain_the_key_material(kms_aead: KmsAead) -> None:
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
    cleartext = tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    key_value = tink_pb2.Keyset.FromString(cleartext).key[0].key_data.value

    wrapped = tink.proto_keyset_format.serialize_encrypted(handle, kms_aead, KEYSET_AD)

    assert key_value not in wrapped


def test_wrapped_keyset_does_not_unwrap_with_other_associated_data(kms_aead: KmsAead) -> None:
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
    wrapped = tink.proto_keyset_format.serialize_encrypted(handle, kms_aead, KEYSET_AD)

    with pytest.raises(tink.TinkError, match="Decryption failed"):
        tink.proto_keyset_format.parse_encrypted(wrapped, kms_aead, b"keys/other.json")


def test_call_counter_counts_each_request_until_reset(
    fresh_kms: FakeKms, kms_aead: KmsAead
) -> None:
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)

    # Tink decrypts a freshly wrapped keyset once to check it: one encrypt, one decrypt.
    wrapped = tink.proto_keyset_format.serialize_encrypted(handle, kms_aead, KEYSET_AD)
    tink.proto_keyset_format.parse_encrypted(wrapped, kms_aead, KEYSET_AD)
    assert fresh_kms.calls == {"encrypt": 1, "decrypt": 2}

    fresh_kms.reset_calls()
    assert fresh_kms.calls == {"encrypt": 0, "decrypt": 0}


def test_unavailable_kms_raises_kms_unavailable_error_within_the_timeout(
    fresh_kms: FakeKms, impatient_kms_aead: KmsAead
) -> None:
    fresh_kms.set_unavailable(True)
    started = time.monotonic()

    with pytest.raises(KmsUnavailableError, match="did not answer"):
        impatient_kms_aead.encrypt(b"x", b"")

    assert time.monotonic() - started < SHORT_TIMEOUT + 1.0
    assert fresh_kms.calls["encrypt"] >= 2, "UNAVAILABLE should be retried within the timeout"


def test_kms_answers_again_once_it_is_back(fresh_kms: FakeKms, impatient_kms_aead: KmsAead) -> None:
    ciphertext = impatient_kms_aead.encrypt(b"patient record", b"")
    fresh_kms.set_unavailable(True)
    with pytest.raises(KmsUnavailableError):
        impatient_kms_aead.decrypt(ciphertext, b"")

    fresh_kms.set_unavailable(False)

    assert impatient_kms_aead.decrypt(ciphertext, b"") == b"patient record"


def test_stopped_kms_raises_kms_unavailable_error(
    fresh_kms: FakeKms, impatient_kms_aead: KmsAead
) -> None:
    fresh_kms.stop()

    with pytest.raises(KmsUnavailableError):
        impatient_kms_aead.encrypt(b"x", b"")


def test_response_corrupted_in_transit_is_rejected(fresh_kms: FakeKms, kms_aead: KmsAead) -> None:
    ciphertext = kms_aead.encrypt(b"patient record", b"")
    fresh_kms.set_corrupt_responses(True)

    with pytest.raises(tink.TinkError, match="response corrupted in transit"):
        kms_aead.encrypt(b"patient record", b"")
    with pytest.raises(tink.TinkError, match="response corrupted in transit"):
        kms_aead.decrypt(ciphertext, b"")


def test_kms_rejects_a_request_whose_checksum_does_not_match(
    kms_client: kms_v1.KeyManagementServiceClient,
) -> None:
    with pytest.raises(core_exceptions.BadRequest, match="checksum in field plaintext_crc32c"):
        kms_client.encrypt(request={"name": KEY_NAME, "plaintext": b"x", "plaintext_crc32c": 0})


def test_encrypt_response_names_the_primary_version_and_what_it_verified(
    kms_client: kms_v1.KeyManagementServiceClient,
) -> None:
    response = kms_client.encrypt(
        request={"name": KEY_NAME, "plaintext": b"x", "plaintext_crc32c": google_crc32c.value(b"x")}
    )

    assert response.name == f"{KEY_NAME}/cryptoKeyVersions/1"
    assert response.verified_plaintext_crc32c
    assert not response.verified_additional_authenticated_data_crc32c
    assert response.protection_level == kms_v1.ProtectionLevel.SOFTWARE


def test_encrypt_accepts_the_primary_version_name(
    kms_client: kms_v1.KeyManagementServiceClient,
) -> None:
    version_name = f"{KEY_NAME}/cryptoKeyVersions/1"
    ciphertext = kms_client.encrypt(request={"name": version_name, "plaintext": b"x"}).ciphertext

    response = kms_client.decrypt(request={"name": KEY_NAME, "ciphertext": ciphertext})

    assert response.plaintext == b"x"
    assert response.used_primary
