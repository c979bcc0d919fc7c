"""Move conversations named by a phone number to pseudonymous keys, identity sealed.

Safe while the webhook is live: a patient who writes meanwhile has their conversation moved by
that message, through the same code (repositories/identities.py), and each move is one
conditional commit, so a conversation is moved once, with its draft and queued replies, by
whichever comes first. Idempotent and resumable: a run stopped halfway moves the rest next time.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from migrations.ports import MigrationDeps

logger = logging.getLogger(__name__)


def apply(components: MigrationDeps) -> None:
    conversations = components.repos.conversations
    moved = 0
    for phone in conversations.legacy_keys():
        if conversations.move_legacy(phone, datetime.now(UTC)) is not None:
            moved += 1
    logger.info("phone-keyed conversations moved to pseudonyms", extra={"moved": moved})
