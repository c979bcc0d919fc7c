"""The reminder rules, with an injected clock: schedule, window switch, quiet hours, statuses."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from service.conversation.flow.catalog import MAX_INTERACTIVE_BODY, say
from service.conversation.flow.engine import advance, remind
from service.conversation.flow.questionnaire import load_questionnaire
from service.conversation.schedule import (
    Facts,
    ReminderSettings,
    Stage,
    allowed_at,
    due,
    patient_zones,
    plan,
    stats_fields,
)
from service.domain.record import new_record_id
from service.domain.turns import ConversationState, ConversationStatus, Inbound
from service.errors import ConfigError
from service.shell.config import Config

SETTINGS = ReminderSettings()
BERLIN = ZoneInfo("Europe/Berlin")
GERMANY = patient_zones("4915112345678", None)  # one zone, unlike Spain's (Madrid, Canary)
# 10:00 in Berlin (winter, UTC+1): every default delay lands outside the quiet hours.
WROTE = datetime(2026, 1, 14, 9, 0, tzinfo=UTC)


def stalled(sent: Stage | None = None, wrote: datetime = WROTE, **changes) -> Facts:
    facts = Facts(ConversationStatus.IN_PROGRESS, last_inbound_at=wrote, sent=sent, zones=GERMANY)
    return replace(facts, **changes)


def local(moment: datetime) -> datetime:
    return moment.astimezone(BERLIN)


def test_first_reminder_is_a_nudge_four_hours_after_the_last_message() -> None:
    planned = plan(stalled(), SETTINGS, WROTE)
    assert planned is not None
    assert (planned.stage, planned.at) == (Stage.NUDGE, WROTE + timedelta(hours=4))


def test_second_reminder_comes_22_hours_after_the_last_message_inside_the_window() -> None:
    planned = plan(stalled(Stage.NUDGE), SETTINGS, WROTE + timedelta(hours=4))
    assert planned is not None
    assert (planned.stage, planned.at) == (Stage.LAST_NUDGE, WROTE + timedelta(hours=22))


def test_after_the_window_closes_the_template_goes_after_three_days_then_nothing() -> None:
    planned = plan(stalled(Stage.LAST_NUDGE), SETTINGS, WROTE + timedelta(hours=22))
    assert planned is not None
    assert (planned.stage, planned.at) == (Stage.TEMPLATE, WROTE + timedelta(days=3))
    assert plan(stalled(Stage.TEMPLATE), SETTINGS, WROTE + timedelta(days=3)) is None


def test_a_late_run_past_the_window_sends_the_template_not_a_free_form_nudge() -> None:
    late = WROTE + timedelta(hours=23, minutes=45)
    planned, go = due(stalled(), SETTINGS, late)
    assert planned is not None and planned.stage == Stage.TEMPLATE and not go


def test_a_reminder_due_is_sent_once_its_time_has_come_and_not_before() -> None:
    assert due(stalled(), SETTINGS, WROTE + timedelta(hours=3, minutes=59))[1] is False
    planned, go = due(stalled(), SETTINGS, WROTE + timedelta(hours=4))
    assert go and planned is not None and planned.stage == Stage.NUDGE


def test_an_invitation_never_answered_gets_the_start_template_once_after_a_day() -> None:
    invited = Facts(ConversationStatus.INVITED, invited_at=WROTE, zones=GERMANY)
    planned = plan(invited, SETTINGS, WROTE)
    assert planned is not None
    assert (planned.stage, planned.at) == (Stage.INVITATION, WROTE + timedelta(days=1))
    assert plan(replace(invited, sent=Stage.INVITATION), SETTINGS, planned.at) is None


@pytest.mark.parametrize(
    "status",
    [
        ConversationStatus.OPTED_OUT,  # STOP, or a declined consent
        ConversationStatus.COMPLETED,
        ConversationStatus.NEW,  # erased: the engine starts a brand-new state
    ],
)
def test_no_reminder_after_stop_decline_completion_or_erasure(status: str) -> None:
    facts = stalled(status=status, invited_at=WROTE)
    assert plan(facts, SETTINGS, WROTE) is None
    assert due(facts, SETTINGS, WROTE + timedelta(days=5)) == (None, False)


def test_a_nudge_falling_in_quiet_hours_waits_until_eight_in_the_morning_local_time() -> None:
    evening = datetime(2026, 1, 14, 18, 30, tzinfo=UTC)  # 19:30 in Berlin; +4 h is 23:30
    planned = plan(stalled(wrote=evening), SETTINGS, evening)
    assert planned is not None and planned.stage == Stage.NUDGE
    assert local(planned.at).replace(tzinfo=None) == datetime(2026, 1, 15, 8, 0)


def test_a_run_during_quiet_hours_postpones_the_due_reminder_to_the_morning() -> None:
    night = datetime(2026, 1, 14, 21, 30, tzinfo=UTC)  # 22:30 in Berlin
    wrote = night - timedelta(hours=5)
    planned, go = due(stalled(wrote=wrote), SETTINGS, night)
    assert not go and planned is not None
    assert local(planned.at).hour == 8 and planned.at - night < timedelta(hours=10)


def test_a_nudge_pushed_onto_the_last_one_by_quiet_hours_is_skipped() -> None:
    # Quiet hours 12:00 to 10:00 push the 4 h nudge (15:00) and the 22 h one (09:00) to the
    # same 10:00: the last nudge goes alone.
    settings = replace(SETTINGS, quiet_start_hour=12, quiet_end_hour=10)
    wrote = datetime(2026, 1, 14, 10, 0, tzinfo=UTC)  # 11:00 in Berlin
    planned = plan(stalled(wrote=wrote), settings, wrote)
    assert planned is not None and planned.stage == Stage.LAST_NUDGE


def test_a_patient_with_no_phone_is_timed_by_the_country_of_the_bsuid() -> None:
    zones = patient_zones(None, "US.1410018717833190")
    assert ZoneInfo("America/New_York") in zones and ZoneInfo("Pacific/Honolulu") in zones
    three_am_new_york = datetime(2026, 1, 14, 8, 0, tzinfo=UTC)
    moment = allowed_at(three_am_new_york, zones, SETTINGS)
    assert all(8 <= moment.astimezone(zone).hour < 21 for zone in zones)


def test_a_phone_number_gives_its_own_time_zones() -> None:
    assert patient_zones("12125551234", None) == (ZoneInfo("America/New_York"),)
    spain = patient_zones("34612345678", "US.1")  # the phone wins over the BSUID
    assert set(spain) == {ZoneInfo("Europe/Madrid"), ZoneInfo("Atlantic/Canary")}


def test_a_new_message_clears_where_the_patient_stopped_and_completion_keeps_the_reminders() -> (
    None
):
    previous = {"status": "in_progress", "stalled_step": "name", "reminded_steps": ["name"]}
    assert stats_fields(previous, "in_progress", new_form=False) == {
        "stalled_step": None,
        "reminded_steps": ["name"],
    }
    completed = stats_fields(previous, "completed", new_form=False)
    assert completed["completed_reminded_steps"] == ["name"]
    restarted = stats_fields(previous, "in_progress", new_form=True)
    assert restarted["reminded_steps"] == []
    assert stats_fields(previous, "new", new_form=False)["completed_reminded_steps"] == []


def test_second_reminder_must_come_after_the_first_in_the_configuration() -> None:
    with pytest.raises(ConfigError, match="REMINDER_FIRST_MINUTES"):
        Config.from_env({"REMINDER_FIRST_MINUTES": "600", "REMINDER_SECOND_MINUTES": "300"})


# -- what a reminder says -------------------------------------------------------------


def _state_at(step: str, language: str | None = "es") -> ConversationState:
    return ConversationState(
        status=ConversationStatus.CONFIRMING
        if step == "summary"
        else ConversationStatus.IN_PROGRESS,
        step=step,
        language=language,
    )


def test_the_first_reminder_asks_again_the_question_the_patient_stopped_at_with_its_buttons() -> (
    None
):
    questionnaire = load_questionnaire("1")
    (reply,) = remind(questionnaire, _state_at("gender"), "reminder_nudge")
    assert reply.body == say("es", "reminder_nudge", "ask_gender")
    assert reply.body.startswith("¡Hola de nuevo!")
    assert [button.id for button in reply.buttons] == [
        "gender:female",
        "gender:male",
        "gender:other",
    ]


@pytest.mark.parametrize("language", [None, "en", "es"])
def test_every_reminder_fits_whatsapp_limits_at_every_step(language: str | None) -> None:
    questionnaire = load_questionnaire("1")
    for question in questionnaire.questions:
        for intro in ("reminder_nudge", "reminder_last_nudge"):
            replies = remind(questionnaire, _state_at(question.id, language), intro)
            assert replies, question.id
            assert all(len(reply.body) <= MAX_INTERACTIVE_BODY for reply in replies)


def test_no_reminder_text_for_a_patient_with_no_form_under_way() -> None:
    done = ConversationState(status=ConversationStatus.COMPLETED, language="en")
    assert remind(load_questionnaire("1"), done, "reminder_nudge") == ()


def test_the_reminder_templates_button_asks_the_current_question_again_without_counting_it() -> (
    None
):
    questionnaire = load_questionnaire("1")
    state = _state_at("name", "en")
    tap = Inbound("choice", "Continue", "resume")
    step = advance(questionnaire, state, tap, WROTE, new_record_id())
    assert step.state == state
    assert [reply.body for reply in step.replies] == ["What is your full name?"]
