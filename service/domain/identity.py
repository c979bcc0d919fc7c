"""Who a patient is on WhatsApp, and the pseudonyms that name them in storage (pure: no I/O).

Since 2026 Meta identifies every WhatsApp user to a business by a business-scoped user id
(BSUID, e.g. ``ES.1410018718833190``), and a user who adopts a username may write with no
phone number at all. A patient is therefore known by their BSUID when Meta sends one and by
their phone number otherwise; either may change (a new number, a new BSUID), and Meta
announces both changes with a system message.

Neither identifier is ever stored readable: documents are named by a keyed hash (HMAC-SHA256
under PSEUDONYM_KEY) of one identifier, so nobody with read access to Firestore can test a
known number against the ids without the key, and the identity itself is kept only inside a
Tink ciphertext.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

# E.164: 7 (Niue, Tokelau) to 15 digits, as WhatsApp writes them (no '+').
PHONE_PATTERN = re.compile(r"[0-9]{7,15}")
# Meta's BSUIDs: an ISO 3166 country code, a dot, an alphanumeric id; a parent BSUID inserts
# `ENT.` (`US.ENT.11815799212886844830`). The length bound is ours, generous.
BSUID_PATTERN = re.compile(r"[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,64}")
_KEY_HEX_LENGTH = 32  # 128 bits: document ids stay short, collisions stay out of reach


@dataclass(frozen=True)
class PatientIdentity:
    """What WhatsApp tells us of a patient: a phone number, a BSUID, or both."""

    phone: str | None = None  # E.164 digits without '+'
    bsuid: str | None = None

    def __post_init__(self) -> None:
        if self.phone is None and self.bsuid is None:
            raise ValueError("an identity needs a phone number or a BSUID")
        if self.phone is not None and not is_phone(self.phone):
            raise ValueError("phone must be 7 to 15 digits")
        if self.bsuid is not None and not is_bsuid(self.bsuid):
            raise ValueError("bsuid is not a business-scoped user id")

    def __repr__(self) -> str:  # never the identifiers: reprs end up in logs and tracebacks
        return f"PatientIdentity(<{self.known_by}>)"

    @property
    def known_by(self) -> str:
        """Say how the patient is identified, without saying who: "phone+bsuid", say."""
        return "+".join(name for name in ("phone", "bsuid") if getattr(self, name))

    @property
    def identifiers(self) -> list[str]:
        """Return the identifiers in the order a conversation is looked up: BSUID first."""
        found = []
        if self.bsuid:
            found.append(bsuid_identifier(self.bsuid))
        if self.phone:
            found.append(phone_identifier(self.phone))
        return found

    @property
    def primary(self) -> str:
        """Return the identifier a new conversation is named after."""
        return self.identifiers[0]

    def merged(self, newer: PatientIdentity) -> PatientIdentity:
        """Return this identity updated with what a newer message says (it wins where given)."""
        return PatientIdentity(phone=newer.phone or self.phone, bsuid=newer.bsuid or self.bsuid)

    def to_dict(self) -> dict[str, str]:
        return {
            name: value for name, value in (("phone", self.phone), ("bsuid", self.bsuid)) if value
        }

    @classmethod
    def from_dict(cls, data: object) -> PatientIdentity | None:
        """Rebuild an identity from to_dict's form; None when it holds none."""
        if not isinstance(data, dict):
            return None
        phone, bsuid = data.get("phone"), data.get("bsuid")
        phone = phone if isinstance(phone, str) and is_phone(phone) else None
        bsuid = bsuid if isinstance(bsuid, str) and is_bsuid(bsuid) else None
        return cls(phone=phone, bsuid=bsuid) if phone or bsuid else None


def is_phone(value: object) -> bool:
    return isinstance(value, str) and PHONE_PATTERN.fullmatch(value) is not None


def is_bsuid(value: object) -> bool:
    return isinstance(value, str) and BSUID_PATTERN.fullmatch(value) is not None


def phone_identifier(phone: str) -> str:
    return f"phone:{phone}"


def bsuid_identifier(bsuid: str) -> str:
    return f"bsuid:{bsuid}"


def parse_lookup(value: str) -> PatientIdentity:
    """Read what support staff type to find a patient: '+34 612 345 678' or a BSUID."""
    text = value.strip()
    if is_bsuid(text):
        return PatientIdentity(bsuid=text)
    digits = re.sub(r"[\s().-]", "", text).removeprefix("+")
    if is_phone(digits):
        return PatientIdentity(phone=digits)
    raise ValueError("give a phone number in international format (+34…) or a BSUID (ES.…)")


class Pseudonyms:
    """Name documents by a keyed hash of an identifier; the key is PSEUDONYM_KEY."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def key(self, identifier: str) -> str:
        """Return the pseudonym of one identifier (`phone:…` or `bsuid:…`): 32 hex digits."""
        digest = hmac.new(self._secret, identifier.encode(), hashlib.sha256).hexdigest()
        return digest[:_KEY_HEX_LENGTH]

    def keys(self, identity: PatientIdentity) -> list[str]:
        """Return the pseudonyms of every identifier of an identity, BSUID first."""
        return [self.key(identifier) for identifier in identity.identifiers]
