"""One intake record as FHIR R4 resources (pure: no I/O, clock or random).

Per record: a Patient, a QuestionnaireResponse answering every item of the Questionnaire, a
Consent, a Condition per medical condition and a MedicationStatement per medication. Ids are
derived from the record id (systems.resource_id), and every reference points at a resource
of the same record, so an export is closed under its references.

What the patient typed stays text: the name is HumanName.text (never split into given and
family names), the address Address.text, a condition Condition.code.text and a medication
MedicationStatement.medicationCodeableConcept.text, trimmed of leading and trailing blanks
as the form's own parsers trim them (FHIR strings should have none, and the R4 string pattern
refuses a leading blank other than a space or tab, such as U+3000). Only what the patient
picked from the form's choices is coded: the language (BCP 47), gender (administrative-gender:
the form offers female, male and other, which are exactly those codes; `unknown` is never
produced, since the form has no such answer), consent and a list's "none". A condition is
`unconfirmed`: the patient reported it and no clinician has verified it. A medication is
`active`: the form asks which ones the patient is taking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC
from typing import Any

from service.conversation.flow.questionnaire import Question, load_questionnaire
from service.domain.record import IntakeRecord
from service.exports.fhir import systems
from service.exports.fhir.questionnaire import (
    CURRENT_VERSION,
    NONE_CODE,
    answered_questions,
    questionnaire_resource,
)

RESOURCE_TYPES = (
    "Patient",
    "QuestionnaireResponse",
    "Consent",
    "Condition",
    "MedicationStatement",
)
_RECORD_FIELDS = frozenset(record_field.name for record_field in fields(IntakeRecord))
_UNCONFIRMED = {
    "coding": [{"system": systems.CONDITION_VERIFICATION, "code": "unconfirmed"}],
}
_PRIVACY_CONSENT = {
    "coding": [
        {"system": systems.CONSENT_SCOPE, "code": "patient-privacy", "display": "Privacy Consent"}
    ],
}
_PATIENT_CONSENT = {"coding": [{"system": systems.LOINC, "code": "59284-0"}]}

Answer = Callable[[IntakeRecord], list[dict[str, Any]]]


@dataclass(frozen=True)
class RecordResources:
    """The resources of one record, by type."""

    patient: dict[str, Any]
    questionnaire_response: dict[str, Any]
    consent: dict[str, Any]
    conditions: list[dict[str, Any]]
    medication_statements: list[dict[str, Any]]

    def by_type(self) -> dict[str, list[dict[str, Any]]]:
        """Return every resource under its resourceType, in RESOURCE_TYPES order."""
        return {
            "Patient": [self.patient],
            "QuestionnaireResponse": [self.questionnaire_response],
            "Consent": [self.consent],
            "Condition": self.conditions,
            "MedicationStatement": self.medication_statements,
        }


class RecordMapper:
    """Map records to resources; built once per export from the form it answers."""

    def __init__(self, version: str = CURRENT_VERSION) -> None:
        form = load_questionnaire(version)
        items = {item["linkId"]: item for item in questionnaire_resource(version)["item"]}
        self.version = version
        self._answers = tuple(
            (question.id, _answer(question, items[question.id]))
            for question in answered_questions(form)
        )
        self._languages = _options(items, next(q for q in form.questions if q.stores == "language"))

    def map(self, record: IntakeRecord) -> RecordResources:
        """Return the record's resources."""
        record_id = record.record_id
        patient_id = systems.resource_id(record_id, "Patient")
        response_id = systems.resource_id(record_id, "QuestionnaireResponse")
        patient_ref = {"reference": f"Patient/{patient_id}"}
        response_ref = {"reference": f"QuestionnaireResponse/{response_id}"}
        submitted_at = record.submitted_at.astimezone(UTC).isoformat()
        conditions = [
            {
                "resourceType": "Condition",
                "id": systems.resource_id(record_id, "Condition", number),
                "verificationStatus": _UNCONFIRMED,
                "code": {"text": text},
                "subject": patient_ref,
                "recordedDate": submitted_at,
                "asserter": patient_ref,
                "evidence": [{"detail": [response_ref]}],
            }
            for number, text in enumerate(map(str.strip, record.medical_conditions), 1)
        ]
        medications = [
            {
                "resourceType": "MedicationStatement",
                "id": systems.resource_id(record_id, "MedicationStatement", number),
                "status": "active",
                "medicationCodeableConcept": {"text": text},
                "subject": patient_ref,
                "dateAsserted": submitted_at,
                "informationSource": patient_ref,
                "derivedFrom": [response_ref],
            }
            for number, text in enumerate(map(str.strip, record.current_medications), 1)
        ]
        response = {
            "resourceType": "QuestionnaireResponse",
            "id": response_id,
            "language": record.language,
            "identifier": {"system": systems.RECORD_ID_SYSTEM, "value": record_id},
            "questionnaire": f"{systems.QUESTIONNAIRE_URL}|{record.questionnaire_version}",
            "status": "completed",
            "subject": patient_ref,
            "authored": submitted_at,
            "source": patient_ref,
            "item": [
                {"linkId": link_id, "answer": answer(record)} for link_id, answer in self._answers
            ],
        }
        return RecordResources(
            self._patient(record, patient_id),
            response,
            self._consent(record, patient_ref, response_ref),
            conditions,
            medications,
        )

    def _patient(self, record: IntakeRecord, patient_id: str) -> dict[str, Any]:
        identifiers = []
        if record.bsuid:
            identifiers.append({"system": systems.BSUID_SYSTEM, "value": record.bsuid})
        if record.wa_id:
            identifiers.append({"system": systems.WHATSAPP_ID_SYSTEM, "value": record.wa_id})
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": patient_id,
            "identifier": identifiers,
            "name": [{"text": record.name.strip()}],
        }
        if record.wa_id:  # a patient known only by a username has no number to call
            patient["telecom"] = [{"system": "phone", "value": "+" + record.wa_id, "use": "mobile"}]
        language = _pick(self._languages, record.language, "language")
        patient.update(
            gender=administrative_gender(record.gender),
            birthDate=record.date_of_birth.isoformat(),
            address=[{"text": record.address.strip()}],
            communication=[
                {"language": {"coding": [language], "text": language["display"]}, "preferred": True}
            ],
        )
        return patient

    def _consent(
        self, record: IntakeRecord, patient_ref: dict[str, str], response_ref: dict[str, str]
    ) -> dict[str, Any]:
        return {
            "resourceType": "Consent",
            "id": systems.resource_id(record.record_id, "Consent"),
            "language": record.language,  # the language the consent was asked and given in
            "status": "active",
            "scope": _PRIVACY_CONSENT,
            "category": [_PATIENT_CONSENT],
            "patient": patient_ref,
            "dateTime": record.consent_at.astimezone(UTC).isoformat(),
            # The text agreed to is the Questionnaire's `consent` item, in the record's version.
            "policy": [{"uri": f"{systems.QUESTIONNAIRE_URL}|{record.questionnaire_version}"}],
            "sourceReference": response_ref,
        }


def administrative_gender(gender: str) -> str:
    """Return the administrative-gender code of the form's gender answer.

    The form's answers are female, male and other, exactly FHIR's codes; anything else is a
    broken record, refused rather than coded as something the patient did not say.
    """
    if gender not in ("female", "male", "other"):
        raise ValueError("gender is not one of the form's answers")
    return gender


def _answer(question: Question, item: dict[str, Any]) -> Answer:
    """Return how a record's answer to a question becomes the item's answers."""
    if question.stores == "language":
        languages = _options({question.id: item}, question)
        return lambda record: [{"valueCoding": _pick(languages, record.language, question.id)}]
    if question.stores == "consent":
        # A record exists only once the patient agreed: consent_at is when they said yes.
        agreed = _pick(_options({question.id: item}, question), "yes", question.id)
        return lambda record: [{"valueCoding": agreed}]
    if question.id not in _RECORD_FIELDS:
        raise ValueError(f"{question.id}: an IntakeRecord has no such field")
    name = question.id
    if question.type == "choice":
        options = _options({name: item}, question)
        return lambda record: [{"valueCoding": _pick(options, getattr(record, name), name)}]
    if question.type == "date":
        return lambda record: [{"valueDate": getattr(record, name).isoformat()}]
    if question.type == "list":
        none = {"valueCoding": _pick(_options({name: item}, question), NONE_CODE, name)}
        return lambda record: (
            [{"valueString": text.strip()} for text in getattr(record, name)] or [none]
        )
    return lambda record: [{"valueString": getattr(record, name).strip()}]


def _options(items: dict[str, dict[str, Any]], question: Question) -> dict[str, dict[str, Any]]:
    """Return a choice item's codings by code, without their translations (kept in the form)."""
    return {
        option["valueCoding"]["code"]: {
            key: value for key, value in option["valueCoding"].items() if not key.startswith("_")
        }
        for option in items[question.id]["answerOption"]
    }


def _pick(options: dict[str, dict[str, Any]], code: str, name: str) -> dict[str, Any]:
    if code not in options:
        raise ValueError(f"{name} is not one of the form's answers")
    return options[code]
