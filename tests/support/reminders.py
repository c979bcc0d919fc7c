"""Patients who stopped answering, written straight into Firestore (tests and bench/reminders.py),
and phone numbers whose local time is daytime now, so a reminder due now is not postponed."""

from __future__ import annotations

from datetime import UTC, datetime

from repositories.conversations import ConversationRepository, ConversationUpdate
from service.conversation.reminders import after_message
from service.conversation.schedule import patient_zones
from service.conversation.state import update_from_state
from service.domain.identity import PatientIdentity
from service.domain.record import new_record_id
from service.domain.turns import ConversationState, ConversationStatus
from service.shell.config import Config

# Mobile numbers of single-zone countries around the world: at any hour one of them is in
# its daytime (10:00 to 18:00), far from the quiet hours.
DAYTIME_CANDIDATES = ("4915112345678", "819012345678", "5511912345678", "919812345678",
                      "12125551234", "6591234567", "18085551234")  # fmt: skip
STEPS = ("language", "consent", "name", "date_of_birth", "gender", "address",
         "medical_conditions", "current_medications")  # fmt: skip


def daytime_prefix(now: datetime | None = None) -> str:
    """Return a number whose every time zone is between 10:00 and 18:00 at `now`."""
    moment = now or datetime.now(UTC)
    for number in DAYTIME_CANDIDATES:
        zones = patient_zones(number, None)
        if zones and all(10 <= moment.astimezone(zone).hour < 18 for zone in zones):
            return number
    raise AssertionError("no candidate number is in its daytime now")  # cannot happen


def daytime_phone(index: int, now: datetime | None = None) -> str:
    """A distinct phone number (by index) in the same daytime country."""
    prefix = daytime_prefix(now)
    return prefix[: len(prefix) - 6] + f"{index:06d}"


def stall(
    conversations: ConversationRepository,
    identity: PatientIdentity,
    step: str,
    last_inbound_at: datetime,
    settings: Config,
    language: str = "en",
) -> None:
    """Write a conversation whose patient stopped at `step` when they last wrote, with the
    schedule a message at that time would have stored."""
    state = ConversationState(
        status=ConversationStatus.IN_PROGRESS,
        step=step,
        language=language,
        draft_record_id=new_record_id(),
        history=STEPS[: STEPS.index(step)],
    )

    def decide(_stored) -> ConversationUpdate:
        update = update_from_state(state, [])
        update.fields["last_inbound_at"] = last_inbound_at
        update.fields.update(after_message(settings, {}, None, state, last_inbound_at, identity))
        return update

    conversations.update_without_message(identity, datetime.now(UTC), decide)
