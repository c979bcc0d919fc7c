"""Conversation state: `conversations/{key}`, one read and one conditional commit per message.

`key` is a pseudonym of the patient (see repositories/identities.py); who they are (phone,
BSUID) is stored only sealed, in the `identity` field. Plain fields are what support staff
read in the console (status, step, language, timestamps, invalid-answer count, last error).
The patient's draft answers and every queued reply (which may repeat answers) are
Tink-encrypted, associated data = the document path.

Changes are optimistic, not Firestore transactions: read the document, decide, then commit the
new state only if the document is unchanged since the read (its update time, or that it still
does not exist), and run again when another process won the race. A transaction holds a lock
on the document from its first read; when a process dies holding it (a SIGKILLed worker, an
instance shut down mid-request), Firestore keeps the lock until the transaction idles out
after 60 s, and every redelivery meanwhile waits and aborts. A precondition leaves nothing
behind.
"""

from repositories.conversations.changes import ConversationChanges
from repositories.conversations.model import (
    MAX_OUTBOX,
    Claim,
    ConversationIntegrityError,
    ConversationUpdate,
    DropReason,
    OutboxItem,
    SendResult,
    StoredConversation,
)
from repositories.conversations.outbox import OutboxChanges


class ConversationRepository(ConversationChanges, OutboxChanges):
    """Conditional commits over conversation documents, with the sealed draft and outbox."""


__all__ = [
    "MAX_OUTBOX",
    "Claim",
    "ConversationIntegrityError",
    "ConversationRepository",
    "ConversationUpdate",
    "DropReason",
    "OutboxItem",
    "SendResult",
    "StoredConversation",
]
