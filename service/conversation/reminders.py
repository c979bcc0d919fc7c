"""Reminding patients who stop halfway: the schedule stored with every state change, the task
that queues due reminders in the outbox, and the numbers the stats show.

The rules are pure (service/conversation/schedule.py). Here they meet the stored conversation:
every commit that changes a conversation's state stores `next_reminder_at` (indexed) and
`next_reminder`; `POST /tasks/send-reminders` finds the due ones through that index, a page at
a time, and queues each reminder with a conditional commit that also advances the schedule,
so two runs at once queue it once. The commit leases the reminder to this process's sender,
like a webhook's replies; what the sender cannot send stays in the outbox for the flush task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from repositories.conversations import ConversationUpdate, StoredConversation
from service.conversation.flow.engine import remind
from service.conversation.flow.questionnaire import load_questionnaire
from service.conversation.outbox import lease_of
from service.conversation.ports import ConversationDeps, ConversationSettings
from service.conversation.schedule import (
    IN_FORM,
    INVITATION_STEP,
    Facts,
    Planned,
    Stage,
    due,
    patient_zones,
    schedule_fields,
    stats_fields,
)
from service.conversation.state import state_from_stored
from service.domain.identity import PatientIdentity
from service.domain.turns import ConversationState, ConversationStatus
from service.whatsapp.graph import reply_payload, template_message

logger = logging.getLogger(__name__)

# A run stops taking new conversations after this long (Cloud Scheduler's HTTP deadline and
# Cloud Run's request timeout are longer); what is left is due still, for the next run.
RUN_BUDGET = timedelta(seconds=120)
# Conversations reminded at once in a run: each is one read and one conditional commit.
RUN_THREADS = 8
PAGE_SIZE = 200
# The template's quick-reply button: its tap comes back as the "resume" command.
RESUME_PAYLOAD = "resume"
_INTROS = {Stage.NUDGE: "reminder_nudge", Stage.LAST_NUDGE: "reminder_last_nudge"}


class Outcome(StrEnum):
    QUEUED = "queued"  # a reminder was queued (and handed to the sender)
    POSTPONED = "postponed"  # quiet hours, or skipped to a later reminder
    CLEARED = "cleared"  # nothing more to send
    NOT_DUE = "not_due"  # another run (or a patient's message) got there first


@dataclass(frozen=True)
class ReminderReport:
    due: int = 0
    queued: int = 0
    postponed: int = 0
    cleared: int = 0
    not_due: int = 0
    complete: bool = True  # False: the run's budget ran out with due conversations left
    seconds: float = 0.0


# -- the schedule, stored with every state change ----------------------------------------


def after_message(
    settings: ConversationSettings,
    previous: Mapping[str, Any],
    before: ConversationState | None,
    after: ConversationState,
    last_inbound_at: datetime,
    identity: PatientIdentity | None,
) -> dict[str, Any]:
    """The reminder fields to store with a patient's message: a new silence begins."""
    new_form = after.draft_record_id is not None and after.draft_record_id != (
        before.draft_record_id if before else None
    )
    facts = Facts(
        status=after.status,
        last_inbound_at=last_inbound_at,
        invited_at=previous.get("invited_at"),
        zones=_zones(identity),
    )
    return {
        **schedule_fields(facts, settings.reminders, last_inbound_at),
        **stats_fields(previous, after.status, new_form),
    }


def after_invitation(
    settings: ConversationSettings,
    state: ConversationState,
    invited_at: datetime,
    identity: PatientIdentity,
) -> dict[str, Any]:
    """The reminder fields to store with an invitation (none when a form is under way)."""
    if state.status != ConversationStatus.INVITED:
        return {}
    facts = Facts(status=state.status, invited_at=invited_at, zones=_zones(identity))
    return {
        **schedule_fields(facts, settings.reminders, invited_at),
        "stalled_step": None,
        "reminded_steps": [],
    }


def _zones(identity: PatientIdentity | None) -> tuple[Any, ...]:
    if identity is None:
        return ()
    return patient_zones(identity.phone, identity.bsuid)


# -- the task --------------------------------------------------------------------------


def send_reminders(
    components: ConversationDeps,
    now: datetime,
    budget: timedelta = RUN_BUDGET,
    threads: int = RUN_THREADS,
) -> ReminderReport:
    """Queue every reminder due at `now` and hand it to the sender (Cloud Scheduler calls
    this every 15 minutes; `now` is injected so tests and the simulator choose the clock)."""
    started = time.monotonic()
    deadline = started + budget.total_seconds()
    counts = {outcome: 0 for outcome in Outcome}
    complete = True
    keys = components.repos.conversations.due_for_reminder(now, PAGE_SIZE)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="reminders") as pool:
        while True:
            batch = [key for _, key in zip(range(threads * 4), keys, strict=False)]
            if not batch:
                break
            for outcome in pool.map(lambda key: remind_conversation(components, key, now), batch):
                counts[outcome] += 1
            if time.monotonic() > deadline:
                complete = next(keys, None) is None
                break
    report = ReminderReport(
        due=sum(counts.values()),
        queued=counts[Outcome.QUEUED],
        postponed=counts[Outcome.POSTPONED],
        cleared=counts[Outcome.CLEARED],
        not_due=counts[Outcome.NOT_DUE],
        complete=complete,
        seconds=round(time.monotonic() - started, 3),
    )
    logger.info("reminders run", extra={"report": report.__dict__})
    return report


def remind_conversation(components: ConversationDeps, key: str, now: datetime) -> Outcome:
    """Queue one conversation's due reminder and advance its schedule, in one conditional
    commit; hand what it queued to the sender."""
    settings = components.config
    outcome = [Outcome.NOT_DUE]

    def decide(stored: StoredConversation) -> ConversationUpdate | None:
        fields = stored.fields
        at = fields.get("next_reminder_at")
        if at is None or at > now:
            outcome[0] = Outcome.NOT_DUE
            return None
        state = state_from_stored(stored)
        facts = Facts(
            status=state.status if state else ConversationStatus.NEW,
            last_inbound_at=fields.get("last_inbound_at"),
            invited_at=fields.get("invited_at"),
            sent=_stage(fields.get("reminder_stage")),
            zones=_zones(stored.identity),
        )
        planned, go = due(facts, settings.reminders, now)
        step = _stats_step(state)
        changes: dict[str, Any] = {"stalled_step": step} if step else {}
        replies = _replies(settings, state, planned) if planned and go and state else []
        if planned is None or (go and not replies):
            outcome[0] = Outcome.CLEARED
            changes.update({"next_reminder": None, "next_reminder_at": None})
        elif not go:
            outcome[0] = Outcome.POSTPONED
            changes.update({"next_reminder": planned.stage.value, "next_reminder_at": planned.at})
        else:
            outcome[0] = Outcome.QUEUED
            sent = replace(facts, sent=planned.stage)
            changes.update(_sent_fields(fields, step, now))
            changes.update(schedule_fields(sent, settings.reminders, now))
        return ConversationUpdate(changes, stored.draft, replies=replies)

    conversations = components.repos.conversations
    sender = components.sender
    update, claim = conversations.remind(
        key, datetime.now(UTC), decide, lease_of(components), sender.holder
    )
    if update is not None and update.replies:
        logger.info(
            "reminder queued",
            extra={"conversation": key[:12], "reminder": update.fields.get("reminder_stage")},
        )
    sender.submit(claim)
    return outcome[0]


def _sent_fields(fields: Mapping[str, Any], step: str | None, now: datetime) -> dict[str, Any]:
    reminded = list(fields.get("reminded_steps") or [])
    if step and step not in reminded:
        reminded.append(step)
    return {
        "reminded_steps": reminded,
        "reminders_sent": int(fields.get("reminders_sent") or 0) + 1,
        "last_reminder_at": now,
    }


def _stats_step(state: ConversationState | None) -> str | None:
    """The step a silent patient stopped at, as the stats name it."""
    if state is None:
        return None
    if state.status == ConversationStatus.INVITED:
        return INVITATION_STEP
    return state.step if state.status in IN_FORM else None


def _stage(value: object) -> Stage | None:
    try:
        return Stage(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def _replies(
    settings: ConversationSettings, state: ConversationState, planned: Planned
) -> list[dict[str, Any]]:
    """The messages of one reminder, without their recipient (addressed when sent)."""
    language = state.language or "en"
    if planned.stage == Stage.INVITATION:
        return [template_message(settings.whatsapp_start_template, "en")]
    if planned.stage == Stage.TEMPLATE:
        return [template_message(settings.reminder_template, language, RESUME_PAYLOAD)]
    questionnaire = load_questionnaire(state.questionnaire_version)
    return [reply_payload(reply) for reply in remind(questionnaire, state, _INTROS[planned.stage])]
