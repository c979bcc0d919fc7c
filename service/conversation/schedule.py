"""When to remind a patient who stopped answering, and with what: pure rules, no I/O, no clock.

Every function takes the moment it reasons about (`now`, a message's timestamp), so the rules
are tested directly with any clock. The caller stores what they return in the same commit as
the state change that caused it (service/conversation/reminders.py).

The rules (delays from ReminderSettings, defaults in brackets):
- A form under way (in_progress, confirming) whose patient went silent gets a first nudge
  [4 h] after their last message and a second one [22 h] after it, both free-form (the current
  question again, buttons included) and only while WhatsApp's 24-hour window is still open
  (with a margin for a send in flight); once the window has closed, one approved template
  [`intake_reminder`, 3 days after]; then nothing.
- An invitation never answered gets the start template once more [1 day] after it.
- Nothing for any other status: after STOP, a declined consent, completion or erasure, the
  engine's state is opted_out, completed or new, and the schedule is cleared.
- Each reminder goes once per silence: a new message from the patient starts the schedule
  again from the first nudge. A reminder pushed (by quiet hours) to or past the time of the
  next one is skipped, so two never arrive together; a free-form reminder that could no longer
  reach the patient inside the window is skipped too (the template takes over).
- Never in the patient's quiet hours [21:00 to 08:00] in their local time: the phone number's
  time zones (phonenumbers), or the zones of the BSUID's country; a reminder due then waits
  until the quiet hours end in every zone the patient may be in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

from service.domain.turns import ConversationStatus

IN_FORM = frozenset({ConversationStatus.IN_PROGRESS, ConversationStatus.CONFIRMING})
# Meta delivers a free-form message only within 24 h of the patient's last message; a reminder
# is sent only if it leaves this margin for the send (and a sender's retry) to land inside it.
SERVICE_WINDOW = timedelta(hours=24)
WINDOW_MARGIN = timedelta(minutes=30)
# How far the quiet hours may push a reminder before we stop trying to satisfy every zone of a
# country that spans too many (the first zone alone then decides).
_QUIET_SEARCH = timedelta(hours=48)
# The step name the stats use for an invitation never answered.
INVITATION_STEP = "invitation"


class Stage(StrEnum):
    """A reminder of the schedule; stored by value in `next_reminder` and `reminder_stage`."""

    NUDGE = "nudge"  # free-form, the current question again
    LAST_NUDGE = "last_nudge"  # free-form, shortly before the window closes
    TEMPLATE = "template"  # the approved `intake_reminder` template, outside the window
    INVITATION = "invitation"  # the start template again, for an invitation never answered

    @property
    def free_form(self) -> bool:
        return self in (Stage.NUDGE, Stage.LAST_NUDGE)


_STALLED = (Stage.NUDGE, Stage.LAST_NUDGE, Stage.TEMPLATE)


@dataclass(frozen=True)
class ReminderSettings:
    """The schedule's delays (all configurable) and the patient's quiet hours."""

    first: timedelta = timedelta(hours=4)
    second: timedelta = timedelta(hours=22)
    template: timedelta = timedelta(days=3)
    invitation: timedelta = timedelta(days=1)
    quiet_start_hour: int = 21  # local time; quiet until quiet_end_hour the next morning
    quiet_end_hour: int = 8

    def delay(self, stage: Stage) -> timedelta:
        return {
            Stage.NUDGE: self.first,
            Stage.LAST_NUDGE: self.second,
            Stage.TEMPLATE: self.template,
            Stage.INVITATION: self.invitation,
        }[stage]


@dataclass(frozen=True)
class Facts:
    """What the rules read of a conversation (all of it plain fields but the time zones,
    which come from the sealed identity and are never stored)."""

    status: str
    last_inbound_at: datetime | None = None
    invited_at: datetime | None = None
    sent: Stage | None = None  # the last reminder sent in this silence
    zones: tuple[ZoneInfo, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Planned:
    stage: Stage
    at: datetime


def plan(facts: Facts, settings: ReminderSettings, not_before: datetime) -> Planned | None:
    """Return the next reminder after `facts.sent` and when it may go, or None for no more."""
    start, stages = _schedule(facts)
    if start is None:
        return None
    following = stages[stages.index(facts.sent) + 1 :] if facts.sent in stages else stages
    candidates = []
    for stage in following:
        at = allowed_at(max(start + settings.delay(stage), not_before), facts.zones, settings)
        if stage.free_form and at > start + SERVICE_WINDOW - WINDOW_MARGIN:
            continue  # it could not reach the patient any more: the next one takes over
        candidates.append(Planned(stage, at))
    for index, planned in enumerate(candidates):
        later = candidates[index + 1 :]
        if later and later[0].at <= planned.at:
            continue  # pushed onto the next one by quiet hours: send that one alone
        return planned
    return None


def due(facts: Facts, settings: ReminderSettings, now: datetime) -> tuple[Planned | None, bool]:
    """Decide at `now`: return (the planned reminder, whether it goes now).

    A reminder goes when its time has come and `now` is outside the quiet hours; otherwise
    the returned plan says when to look again (None: never, clear the schedule).
    """
    planned = plan(facts, settings, now)
    if planned is None:
        return None, False
    return planned, planned.at <= now


def _schedule(facts: Facts) -> tuple[datetime | None, tuple[Stage, ...]]:
    """When the silence began, and the reminders it may get."""
    if facts.status in IN_FORM and facts.last_inbound_at is not None:
        return facts.last_inbound_at, _STALLED
    if facts.status == ConversationStatus.INVITED and facts.invited_at is not None:
        return facts.invited_at, (Stage.INVITATION,)
    return None, ()


# -- quiet hours -------------------------------------------------------------------------


def is_quiet(moment: datetime, zone: ZoneInfo, settings: ReminderSettings) -> bool:
    hour = moment.astimezone(zone).hour
    start, end = settings.quiet_start_hour, settings.quiet_end_hour
    if start == end:
        return False
    return hour >= start or hour < end if start > end else start <= hour < end


def allowed_at(
    moment: datetime, zones: tuple[ZoneInfo, ...], settings: ReminderSettings
) -> datetime:
    """Return the first moment at or after `moment` outside the quiet hours in every zone.

    A country so wide that no hour suits all its zones falls back to its first zone.
    """
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    zones = zones or (ZoneInfo("UTC"),)
    candidate = moment
    while candidate - moment <= _QUIET_SEARCH:
        moved = False
        for zone in zones:
            if is_quiet(candidate, zone, settings):
                candidate = _quiet_end(candidate, zone, settings)
                moved = True
        if not moved:
            return candidate.astimezone(UTC)
    if len(zones) > 1:
        return allowed_at(moment, zones[:1], settings)
    return moment.astimezone(UTC)


def _quiet_end(moment: datetime, zone: ZoneInfo, settings: ReminderSettings) -> datetime:
    local = moment.astimezone(zone)
    end = local.replace(hour=settings.quiet_end_hour, minute=0, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    # Wall-clock arithmetic: across a DST change, re-read the offset for the new day.
    return end.replace(tzinfo=None).replace(tzinfo=zone).astimezone(UTC)


def patient_zones(phone: str | None, bsuid: str | None) -> tuple[ZoneInfo, ...]:
    """Return the time zones a patient may be in: their phone number's, else their BSUID
    country's (its ISO 3166 prefix); none when neither says (the caller then uses UTC)."""
    names: tuple[str, ...] = ()
    if phone:
        try:
            number = phonenumbers.parse(f"+{phone}", None)
        except phonenumbers.NumberParseException:
            number = None
        if number is not None:
            found = phone_timezones.time_zones_for_number(number)
            names = tuple(name for name in found if name != phone_timezones.UNKNOWN_TIMEZONE)
            if not names:
                names = _country_zones(phonenumbers.region_code_for_number(number) or "")
    if not names and bsuid:
        names = _country_zones(bsuid.split(".", 1)[0])
    return tuple(zone for zone in (_zone(name) for name in names) if zone is not None)


@cache
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _country_zones(country: str) -> tuple[str, ...]:
    return _zone_table().get(country.upper(), ())


@cache
def _zone_table() -> Mapping[str, tuple[str, ...]]:
    """ISO 3166 country -> its time zones, from the IANA zone.tab the tzdata package ships."""
    table: dict[str, list[str]] = {}
    text = resources.files("tzdata.zoneinfo").joinpath("zone.tab").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            if len(parts) >= 3:
                table.setdefault(parts[0], []).append(parts[2])
    return {country: tuple(names) for country, names in table.items()}


# -- what each state change stores -----------------------------------------------------


def schedule_fields(
    facts: Facts, settings: ReminderSettings, not_before: datetime
) -> dict[str, Any]:
    """The schedule's plain fields after a change: the next reminder and when it is due."""
    planned = plan(facts, settings, not_before)
    return {
        "next_reminder": planned.stage.value if planned else None,
        "next_reminder_at": planned.at if planned else None,
        "reminder_stage": facts.sent.value if facts.sent else None,
    }


def stats_fields(previous: Mapping[str, Any], status: str, new_form: bool) -> dict[str, Any]:
    """The counters the stats read, after a patient's message changed the state.

    `reminded_steps`: the steps this form (or invitation) was reminded at; `stalled_step`: where
    the patient is silent now (cleared by any message); `completed_reminded_steps`: the
    reminded steps of the last form completed. No answers, only step names.
    """
    reminded = list(previous.get("reminded_steps") or [])
    if status == ConversationStatus.NEW:  # erased: nothing of the patient's forms stays
        return {"stalled_step": None, "reminded_steps": [], "completed_reminded_steps": []}
    if new_form and previous.get("status") != ConversationStatus.INVITED:
        reminded = []  # a form started afresh (an invitation's reminder counts for its form)
    fields: dict[str, Any] = {"stalled_step": None, "reminded_steps": reminded}
    if status == ConversationStatus.COMPLETED and previous.get("status") in IN_FORM:
        fields["completed_reminded_steps"] = reminded
    return fields
