"""Every URI the FHIR export names, in one place (docs/fhir.md lists them for a clinic).

Our own systems live under NAMESPACE. The product has no public domain of its own, so the
namespace is in `.invalid`, which RFC 6761 reserves so that it never resolves and never
belongs to anyone else: an identifier minted here can not collide with another
organisation's. Changing NAMESPACE changes the identity of every exported resource's
identifiers and of the Questionnaire, so it is a contract (DESIGN.md, docs/fhir.md).
"""

from __future__ import annotations

import hashlib
import uuid

NAMESPACE = "https://whatsapp-intake.invalid/fhir"

# The form: its canonical URL (a QuestionnaireResponse names it with `|version`) and the
# code systems of the answers the form itself defines (consent's yes/no, a list's "none").
QUESTIONNAIRE_ID = "intake"
QUESTIONNAIRE_URL = f"{NAMESPACE}/Questionnaire/{QUESTIONNAIRE_ID}"
FORM_CODES = f"{NAMESPACE}/CodeSystem/intake"  # + "-<step id>"

# Identifiers: the intake record, and who WhatsApp says the patient is. A BSUID is scoped
# to the clinic's business portfolio; the WhatsApp id of a patient who writes with a
# number is that number in E.164 digits (the phone is in Patient.telecom too).
RECORD_ID_SYSTEM = f"{NAMESPACE}/sid/intake-record"
BSUID_SYSTEM = f"{NAMESPACE}/sid/whatsapp-bsuid"
WHATSAPP_ID_SYSTEM = f"{NAMESPACE}/sid/whatsapp-id"

# Standard systems.
LANGUAGE = "urn:ietf:bcp:47"
ADMINISTRATIVE_GENDER = "http://hl7.org/fhir/administrative-gender"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC = "http://loinc.org"
TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"

# Resource ids are uuid5 of the record id under this namespace: the same record gets the same
# ids in every export, so loading an overlapping export again updates rather than duplicates.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, NAMESPACE).bytes


def resource_id(record_id: str, resource_type: str, number: int = 0) -> str:
    """Return the stable id of a record's resource (the number-th of its type, from 1).

    It is `str(uuid.uuid5(...))` computed directly: uuid.uuid5 builds UUID objects at about
    5 us a call, and an export takes several ids per record.
    """
    name = f"{record_id}/{resource_type}" + (f"/{number}" if number else "")
    digest = bytearray(hashlib.sha1(_ID_NAMESPACE + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = digest.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"
