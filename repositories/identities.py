"""Find a patient's conversation from what WhatsApp says of them, without storing who they are.

A conversation document is named by the pseudonym (keyed hash) of the identifier it was first
known by. Every other identifier of the same patient (a BSUID that started to arrive next to
the phone, a new number, a new BSUID) gets a link, `identity_links/{pseudonym}`, holding only
the conversation's pseudonym. All candidates are read in one BatchGetDocuments call: the
conversation named by each identifier, the link of each, and the document a phone-keyed
conversation had before migration 0003 (`conversations/{phone}`), which is moved on first use
so a patient mid-form keeps their draft while the migration runs.

Conversations store the patient's identity sealed; a number recycled to another person (same
phone, another BSUID) therefore does not reopen the previous owner's form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore

from repositories.clients import FirestoreCall
from service.domain.identity import PatientIdentity, Pseudonyms, is_phone
from service.domain.turns import ConversationStatus

CONVERSATIONS = "conversations"
LINKS = "identity_links"


@dataclass
class Located:
    """Where a patient's conversation lives now, and what must commit with its next change."""

    key: str
    snapshot: firestore.DocumentSnapshot  # the conversation document (may not exist yet)
    source: firestore.DocumentSnapshot | None = None  # a document to move into `key`
    links: list[firestore.DocumentSnapshot] = field(default_factory=list)
    folded: list[firestore.DocumentSnapshot] = field(default_factory=list)  # invitations

    @property
    def current(self) -> firestore.DocumentSnapshot:
        """The document whose state the change starts from."""
        return self.source if self.source is not None else self.snapshot


class IdentityResolver:
    """Read the candidate documents of an identity and decide which conversation is theirs."""

    def __init__(
        self,
        client: firestore.Client,
        pseudonyms: Pseudonyms,
        stored_identity: Callable[[firestore.DocumentSnapshot], PatientIdentity | None],
        call: FirestoreCall,
    ) -> None:
        self._client = client
        self._conversations = client.collection(CONVERSATIONS)
        self._links = client.collection(LINKS)
        self._pseudonyms = pseudonyms
        self._stored_identity = stored_identity
        self._call = call

    def locate(
        self, lookup: PatientIdentity, target: PatientIdentity | None = None
    ) -> Located | None:
        """Find the conversation of `lookup`; with `target`, also plan links for its identifiers.

        Without `target` nothing is planned and None means the patient has no conversation.
        With it, a conversation that does not exist yet is located at the pseudonym of
        `target`'s primary identifier, and links are planned for every identifier of `target`
        that does not lead to the conversation yet.
        """
        keys = self._pseudonyms.keys(lookup)
        # The new identifiers of a changed number or BSUID too: one round trip in every case.
        wanted = list(dict.fromkeys(keys + (self._pseudonyms.keys(target) if target else [])))
        references = [self._conversations.document(key) for key in wanted]
        references += [self._links.document(key) for key in wanted]
        if lookup.phone:
            references.append(self._conversations.document(lookup.phone))  # before 0003
        snapshots = {
            snapshot.reference.path: snapshot
            for snapshot in self._client.get_all(references, **self._call)
        }

        def read(reference: firestore.DocumentReference) -> firestore.DocumentSnapshot:
            found = snapshots.get(reference.path)
            return found if found is not None else reference.get(**self._call)

        located = self._find(lookup, keys, read)
        if target is None:
            return located
        if located is None:
            key = self._pseudonyms.key(target.primary)
            located = Located(key, read(self._conversations.document(key)))
        self._plan_links(located, target, read)
        return located

    def _find(
        self,
        lookup: PatientIdentity,
        keys: list[str],
        read: Callable[[firestore.DocumentReference], firestore.DocumentSnapshot],
    ) -> Located | None:
        for identifier, key in zip(lookup.identifiers, keys, strict=True):
            snapshot = read(self._conversations.document(key))
            if snapshot.exists and self._belongs(snapshot, lookup, identifier):
                return Located(key, snapshot)
            link = read(self._links.document(key))
            target = (link.to_dict() or {}).get("conversation") if link.exists else None
            if isinstance(target, str):
                linked = read(self._conversations.document(target))
                if linked.exists and self._belongs(linked, lookup, identifier):
                    return Located(target, linked)
        if lookup.phone:
            legacy = read(self._conversations.document(lookup.phone))
            if legacy.exists:
                key = self._pseudonyms.key(lookup.primary)
                return Located(key, read(self._conversations.document(key)), source=legacy)
        return None

    def _belongs(
        self, snapshot: firestore.DocumentSnapshot, lookup: PatientIdentity, identifier: str
    ) -> bool:
        """A conversation found through a phone number is this patient's unless it records
        another BSUID: WhatsApp recycles numbers, never BSUIDs."""
        if not identifier.startswith("phone:") or lookup.bsuid is None:
            return True
        stored = self._stored_identity(snapshot)
        return stored is None or stored.bsuid in (None, lookup.bsuid)

    def _plan_links(
        self,
        located: Located,
        target: PatientIdentity,
        read: Callable[[firestore.DocumentReference], firestore.DocumentSnapshot],
    ) -> None:
        for key in self._pseudonyms.keys(target):
            if key == located.key:
                continue
            named = read(self._conversations.document(key))
            if named.exists and _only_invited(named):
                # An invitation sent to a number before we knew it was this patient's: the
                # conversation takes it over, so a later invitation sees this conversation.
                located.folded.append(named)
            link = read(self._links.document(key))
            if not link.exists or (link.to_dict() or {}).get("conversation") != located.key:
                located.links.append(link)

    def stage(self, batch: firestore.WriteBatch, located: Located, now: Any) -> None:
        """Stage the moves, folds and links planned by locate(), each conditional on the
        document being as it was read."""
        if located.source is not None:
            batch.delete(located.source.reference, option=self._unchanged(located.source))
        for folded in located.folded:
            batch.delete(folded.reference, option=self._unchanged(folded))
        for link in located.links:
            fields = {"conversation": located.key, "updated_at": now}
            if link.exists:
                batch.update(link.reference, fields, option=self._unchanged(link))
            else:
                batch.create(link.reference, fields)

    def _unchanged(self, snapshot: firestore.DocumentSnapshot) -> Any:
        return self._client.write_option(last_update_time=snapshot.update_time)


def _only_invited(snapshot: firestore.DocumentSnapshot) -> bool:
    data = snapshot.to_dict() or {}
    return data.get("status") == ConversationStatus.INVITED and not data.get("outbox")


def is_legacy_key(document_id: str) -> bool:
    """Tell whether a conversation id is a phone number (written before migration 0003)."""
    return is_phone(document_id)
