"""Check FHIR output the way a record system would: R4 models, references, the form's items.

fhir.resources 6.4.0 is the last release whose models are FHIR R4 (4.0.1); later releases
model R4B and R5 (see requirements-dev.txt).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import fhir.resources
import pyzipper
from fhir.resources import construct_fhir_element

from service.exports.fhir.systems import QUESTIONNAIRE_URL

assert fhir.resources.__fhir_version__ == "4.0.1", "the export is FHIR R4"

# What each resource type may refer to, by element (R4): every reference must be one of these.
REFERENCE_ELEMENTS = {
    "QuestionnaireResponse": ("subject", "source"),
    "Consent": ("patient", "sourceReference"),
    "Condition": ("subject", "asserter"),
    "MedicationStatement": ("subject", "informationSource"),
}


def validate(resource: dict[str, Any]) -> None:
    """Parse a resource with the R4 model of its type; raise pydantic's error if it is invalid."""
    construct_fhir_element(resource["resourceType"], resource)


def references(resource: dict[str, Any]) -> Iterator[str]:
    """Yield every `reference` anywhere in a resource."""
    if isinstance(resource, dict):
        for key, value in resource.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(resource, list):
        for value in resource:
            yield from references(value)


def unresolved(resources: Iterable[dict[str, Any]]) -> list[str]:
    """Return the references that name no resource among these (as Type/id)."""
    resources = list(resources)
    known = {f"{resource['resourceType']}/{resource['id']}" for resource in resources}
    return [ref for resource in resources for ref in references(resource) if ref not in known]


def answered_link_ids(response: dict[str, Any]) -> list[str]:
    """Return the linkIds a QuestionnaireResponse answers, in order, each with an answer."""
    return [item["linkId"] for item in response["item"] if item.get("answer")]


def item_link_ids(questionnaire: dict[str, Any]) -> list[str]:
    return [item["linkId"] for item in questionnaire["item"]]


def answers(response: dict[str, Any], link_id: str) -> list[dict[str, Any]]:
    (item,) = (item for item in response["item"] if item["linkId"] == link_id)
    return item["answer"]


def open_fhir_zip(data: bytes, password: str) -> dict[str, bytes]:
    """Open a FHIR export's zip (AES-256, deflated members); return each member's content."""
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        archive.setpassword(password.encode())
        members = {}
        for member in archive.infolist():
            assert member.wz_aes_strength == 3  # 256-bit WinZip AES
            assert member.compress_type == pyzipper.ZIP_DEFLATED
            members[member.filename] = archive.read(member.filename)
    return members


def ndjson(content: bytes) -> list[dict[str, Any]]:
    """Read NDJSON strictly: UTF-8, one JSON object a line, every line ending in a newline."""
    text = content.decode("utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


def questionnaire_reference(version: str = "1") -> str:
    return f"{QUESTIONNAIRE_URL}|{version}"
