"""What the conversation's use cases may reach: conversations and the archive, the Graph API,
two settings and the test-only failpoints; and what erasing a record needs, since a patient
may ask for it. Typed as protocols the shell's components satisfy, so no use case reaches a
client it does not declare and the conversation never imports the shell."""

from __future__ import annotations

from typing import Protocol

from repositories.conversations import Claim
from service.archive.ports import ArchiveDeps, ArchiveStores, Failpoint
from service.conversation.schedule import ReminderSettings
from service.whatsapp.graph import GraphClient


class ReplyQueue(Protocol):
    """Takes over replies a commit leased, to send them off the request (sender.py)."""

    def submit(self, claim: Claim) -> bool: ...
    @property
    def holder(self) -> str: ...


class ConversationSettings(Protocol):
    @property
    def outbox_lease_seconds(self) -> int: ...
    @property
    def whatsapp_start_template(self) -> str: ...
    @property
    def reminder_template(self) -> str: ...
    @property
    def reminders(self) -> ReminderSettings: ...


class ConversationDeps(ArchiveDeps, Protocol):
    @property
    def repos(self) -> ArchiveStores: ...
    @property
    def config(self) -> ConversationSettings: ...
    @property
    def graph(self) -> GraphClient: ...
    @property
    def failpoints(self) -> Failpoint: ...
    @property
    def sender(self) -> ReplyQueue: ...
