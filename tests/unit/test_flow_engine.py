import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.conversation.flow.catalog import text
from service.conversation.flow.engine import advance, invite
from service.conversation.flow.questionnaire import load_questionnaire
from service.domain.record import from_dict, reference_code
from service.domain.turns import (
    ConversationState,
    ConversationStatus,
    Inbound,
    Reply,
    Step,
)

QUESTIONNAIRE = load_questionnaire("1")
NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
WA_ID = "34612345678"

# Meta's Cloud API limits on outbound interactive and text messages (docs/conversations.md).
MAX_TEXT_BODY = 4096
MAX_INTERACTIVE_BODY = 1024
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_BUTTON_ID = 256
MAX_ROWS = 10
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_ROW_ID = 200
MAX_LIST_BUTTON = 20


def record_id(number: int) -> str:
    return f"{number:016d}"


FIRST_ID = record_id(1)


def say(body: str) -> Inbound:
    return Inbound("text", body)


def tap(step: str, choice: str, title: str = "") -> Inbound:
    return Inbound("choice", title or choice.title(), f"{step}:{choice}")


MEDIA = Inbound("unsupported")

ENGLISH_ANSWERS = [
    say("Hi"),
    tap("language", "en", "English"),
    tap("consent", "yes", "Yes, I agree"),
    say("Maria Lopez"),
    say("03/02/1980"),
    tap("gender", "female", "Female"),
    say("12 High Street\nSpringfield AB1 2CD"),
    say("asthma; type 2 diabetes"),
    say("none"),
]
SPANISH_ANSWERS = [
    say("Hola"),
    say("español"),
    say("Sí"),
    say("José Núñez"),
    say("3 de febrero de 1980"),
    say("hombre"),
    say("Calle Mayor 12, 28013 Madrid"),
    say("nada"),
    say("metformina 500 mg, paracetamol 0,5 g"),
]


def assert_within_whatsapp_limits(reply: Reply) -> None:
    """Check one reply against Meta's documented limits, as the Graph API would."""
    assert reply.body.strip()
    assert not (reply.buttons and reply.rows)
    if not reply.buttons and not reply.rows:
        assert len(reply.body) <= MAX_TEXT_BODY
        assert reply.list_button == ""
        return
    assert len(reply.body) <= MAX_INTERACTIVE_BODY
    if reply.buttons:
        assert len(reply.buttons) <= MAX_BUTTONS
        titles = [button.title for button in reply.buttons]
        ids = [button.id for button in reply.buttons]
        assert all(0 < len(title) <= MAX_BUTTON_TITLE for title in titles)
        assert all(0 < len(button_id) <= MAX_BUTTON_ID for button_id in ids)
        assert len(set(titles)) == len(titles) and len(set(ids)) == len(ids)
    else:
        assert 0 < len(reply.list_button) <= MAX_LIST_BUTTON
        assert len(reply.rows) <= MAX_ROWS
        assert all(0 < len(row.title) <= MAX_ROW_TITLE for row in reply.rows)
        assert all(len(row.description) <= MAX_ROW_DESCRIPTION for row in reply.rows)
        assert all(0 < len(row.id) <= MAX_ROW_ID for row in reply.rows)
        assert len({row.id for row in reply.rows}) == len(reply.rows)


def assert_storable(state: ConversationState) -> None:
    """The caller stores the state as JSON: every field must serialise."""
    json.dumps({**vars(state), "answers": dict(state.answers)})


def send(state: ConversationState | None, inbound: Inbound, **options: object) -> Step:
    """Run one message through the engine and check what it produced."""
    step = advance(
        QUESTIONNAIRE,
        state,
        inbound,
        options.get("now", NOW),
        options.get("new_record_id", record_id(99)),
    )
    for reply in step.replies:
        assert_within_whatsapp_limits(reply)
    assert_storable(step.state)
    for effect in step.effects:
        if effect.kind == "archive":
            from_dict(
                {**effect.record, "wa_id": WA_ID, "bsuid": None}
            )  # raises if the record is invalid
    return step


def run(
    messages: Iterable[Inbound], state: ConversationState | None = None, first_id: str = FIRST_ID
) -> list[Step]:
    """Run a conversation; the first message gets `first_id` as its fresh record id."""
    steps = []
    for number, inbound in enumerate(messages):
        new_id = first_id if number == 0 else record_id(1000 + number)
        step = send(state, inbound, new_record_id=new_id)
        steps.append(step)
        state = step.state
    return steps


def state_at(step_id: str, language: str = "en") -> ConversationState:
    """Return the state of a conversation that has reached a question."""
    answers = ENGLISH_ANSWERS if language == "en" else SPANISH_ANSWERS
    state = None
    for step in run([*answers, tap("summary", "confirm")]):
        if step.state.step == step_id:
            return step.state
        state = step.state
    raise AssertionError(f"never reached {step_id}: stopped at {state}")


def summary_state(language: str = "en") -> ConversationState:
    return state_at("summary", language)


# Happy paths -----------------------------------------------------------------------------


def test_an_english_patient_answers_every_question_and_the_record_is_archived() -> None:
    steps = run([*ENGLISH_ANSWERS, tap("summary", "confirm", "Confirm")])
    assert [step.state.step for step in steps] == [
        "language",
        "consent",
        "name",
        "date_of_birth",
        "gender",
        "address",
        "medical_conditions",
        "current_medications",
        "summary",
        None,
    ]
    done = steps[-1]
    assert done.state.status == "completed"
    assert done.state.answers == {}
    assert done.state.record_ids == (FIRST_ID,)
    (archive,) = done.effects
    assert archive.kind == "archive"
    assert archive.record == {
        "record_id": FIRST_ID,
        "submitted_at": NOW.isoformat(),
        "name": "Maria Lopez",
        "date_of_birth": "1980-02-03",
        "gender": "female",
        "address": "12 High Street\nSpringfield AB1 2CD",
        "medical_conditions": ["asthma", "type 2 diabetes"],
        "current_medications": [],
        "language": "en",
        "consent_at": NOW.isoformat(),
        "questionnaire_version": "1",
        "schema_version": 2,
    }
    assert done.replies == (Reply(text("en", "completed", reference=reference_code(FIRST_ID))),)


def test_a_spanish_patient_types_every_answer_and_is_answered_in_spanish() -> None:
    steps = run([*SPANISH_ANSWERS, say("confirmar")])
    assert steps[1].replies[0].body == text("es", "ask_consent")
    assert steps[2].replies[0].body == text("es", "ask_name")
    (archive,) = steps[-1].effects
    assert archive.record["name"] == "José Núñez"
    assert archive.record["date_of_birth"] == "1980-02-03"
    assert archive.record["gender"] == "male"
    assert archive.record["address"] == "Calle Mayor 12, 28013 Madrid"
    assert archive.record["medical_conditions"] == []
    assert archive.record["current_medications"] == ["metformina 500 mg", "paracetamol 0,5 g"]
    assert archive.record["language"] == "es"
    assert steps[-1].replies[0].body == text("es", "completed", reference=reference_code(FIRST_ID))


def test_the_first_message_gets_a_welcome_in_both_languages_and_the_language_buttons() -> None:
    (reply,) = send(None, say("hello"), new_record_id=FIRST_ID).replies
    assert text("en", "welcome") in reply.body and text("es", "welcome") in reply.body
    assert [button.title for button in reply.buttons] == ["English", "Español"]


def test_the_summary_shows_every_answer_with_the_review_buttons() -> None:
    (reply,) = run(ENGLISH_ANSWERS)[-1].replies
    for shown in [
        "Maria Lopez",
        "03/02/1980",
        "Female",
        "12 High Street, Springfield AB1 2CD",
        "asthma, type 2 diabetes",
        "*Current medications:* None",
        "English",
    ]:
        assert shown in reply.body
    assert [button.title for button in reply.buttons] == ["Confirm", "Edit", "Restart"]


def test_long_answers_are_cut_in_the_summary_but_archived_whole() -> None:
    items = ", ".join(f"condition {n:03d} " + "x" * 180 for n in range(50))
    state = replace(
        summary_state(),
        answers={
            **summary_state().answers,
            "name": "N" * 100,
            "address": "A" * 300,
            "medical_conditions": [item.strip() for item in items.split(", ")],
            "current_medications": ["m" * 200] * 50,
        },
    )
    (reply,) = send(state, say("help")).replies[1:]
    assert len(reply.body) <= MAX_INTERACTIVE_BODY
    assert "…" in reply.body
    (archive,) = send(state, tap("summary", "confirm")).effects
    assert archive.record["address"] == "A" * 300
    assert len(archive.record["medical_conditions"]) == 50


# Re-asks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step_id", "inbound", "reask"),
    [
        ("language", say("French"), "reask_language"),
        ("language", tap("gender", "female"), "reask_language"),
        ("consent", say("maybe"), "reask_consent"),
        ("consent", tap("consent", "perhaps"), "reask_consent"),
        ("name", say("A"), "reask_name_too_short"),
        ("name", say("x" * 101), "reask_name_too_long"),
        ("name", say("1234"), "reask_name_no_letter"),
        ("name", say("😀😀😀"), "reask_name"),
        ("name", say("   "), "reask_name"),
        ("name", tap("gender", "female"), "reask_name"),
        ("date_of_birth", say("31/02/1980"), "reask_date_of_birth_impossible"),
        ("date_of_birth", say("02/30/1980"), "reask_date_of_birth_impossible"),
        ("date_of_birth", say("02/03/2026"), "reask_date_of_birth_future"),
        ("date_of_birth", say("01/03/1905"), "reask_date_of_birth_too_old"),
        ("date_of_birth", say("03/02/80"), "reask_date_of_birth_short_year"),
        ("date_of_birth", say("yesterday"), "reask_date_of_birth"),
        ("date_of_birth", say("🎂"), "reask_date_of_birth"),
        ("date_of_birth", say(""), "reask_date_of_birth"),
        ("gender", say("maybe"), "reask_gender"),
        ("gender", tap("gender", "robot"), "reask_gender"),
        ("gender", tap("consent", "yes"), "reask_gender"),
        ("gender", Inbound("choice", "Start", "TEMPLATE_START"), "reask_gender"),
        ("address", say("abc"), "reask_address_too_short"),
        ("address", say("x" * 301), "reask_address_too_long"),
        ("address", say("🏠🏠🏠🏠🏠"), "reask_address"),
        ("medical_conditions", say("😷"), "reask_medical_conditions"),
        ("medical_conditions", say(", ".join(["a"] * 51)), "reask_medical_conditions_too_many"),
        ("medical_conditions", say("x" * 201), "reask_medical_conditions_item_too_long"),
        ("current_medications", say(" "), "reask_current_medications"),
        ("summary", say("perhaps"), "reask_summary"),
        ("summary", tap("summary", "delete"), "reask_summary"),
        ("edit_choice", say("favourite colour"), "reask_edit_field"),
    ],
)
def test_a_wrong_answer_is_asked_again_saying_what_is_expected(
    step_id: str, inbound: Inbound, reask: str
) -> None:
    state = _at(step_id)
    step = send(state, inbound)
    assert step.state == replace(state, invalid_answers=state.invalid_answers + 1)
    (reply,) = step.replies
    assert reply.body == text(state.language, reask)  # no language chosen yet: both languages
    assert step.effects == ()


def _at(step_id: str, language: str = "en") -> ConversationState:
    if step_id == "edit_choice":
        return send(summary_state(language), tap("summary", "edit")).state
    return state_at(step_id, language)


def test_a_reask_of_a_choice_question_offers_its_buttons_again() -> None:
    (reply,) = send(_at("gender"), say("maybe")).replies
    assert [button.id for button in reply.buttons] == [
        "gender:female",
        "gender:male",
        "gender:other",
    ]


def test_a_reask_speaks_the_patients_language() -> None:
    (reply,) = send(_at("date_of_birth", "es"), say("31/02/1980")).replies
    assert reply.body == text("es", "reask_date_of_birth_impossible")


def test_the_date_format_is_spelt_out_in_the_reask() -> None:
    (reply,) = send(_at("date_of_birth"), say("soon")).replies
    assert "DD/MM/YYYY" in reply.body and "03/02/1980" in reply.body


def test_re_asks_add_up_over_the_form() -> None:
    state = _at("name")
    for _ in range(3):
        state = send(state, say("?")).state
    state = send(state, say("Maria Lopez")).state
    assert (state.step, state.invalid_answers) == ("date_of_birth", 3)


@pytest.mark.parametrize(
    ("typed", "gender"),
    [("f", "female"), ("Male", "male"), ("O", "other"), ("mujer", "female"), ("otro", "other")],
)
def test_a_choice_question_accepts_typed_words(typed: str, gender: str) -> None:
    step = send(_at("gender"), say(typed))
    assert step.state.answers["gender"] == gender
    assert step.state.step == "address"


# Commands -----------------------------------------------------------------------------------

HELP_WORDS = ["help", "HELP", "ayuda", "Ayuda!"]
BACK_WORDS = ["back", "Back", "atrás", "atras", "volver"]
RESTART_WORDS = ["restart", "reiniciar", "Empezar"]
STOP_WORDS = ["stop", "STOP", "parar", "baja"]
ERASE_WORDS = ["delete my data", "Delete my data.", "borrar mis datos"]
SOME_STEPS = ["language", "consent", "name", "gender", "medical_conditions", "summary"]


@pytest.mark.parametrize("word", HELP_WORDS)
@pytest.mark.parametrize("step_id", SOME_STEPS)
def test_help_explains_the_current_question_and_changes_nothing(word: str, step_id: str) -> None:
    state = _at(step_id)
    step = send(state, say(word))
    assert step.state == state
    explanation, question = step.replies
    question_spec = QUESTIONNAIRE.question(step_id)
    assert text("en", question_spec.help) in explanation.body
    assert text("en", "help_commands") in explanation.body
    assert question.buttons or question.rows or question.body == text("en", question_spec.prompt)


def test_help_before_any_form_says_how_to_start() -> None:
    step = send(None, say("ayuda"))
    assert step.state == ConversationState()
    assert text("es", "help_idle") in step.replies[0].body


@pytest.mark.parametrize("word", BACK_WORDS)
@pytest.mark.parametrize(
    ("step_id", "previous"),
    [
        ("consent", "language"),
        ("name", "consent"),
        ("gender", "date_of_birth"),
        ("summary", "current_medications"),
    ],
)
def test_back_returns_to_the_previous_question_keeping_answers(
    word: str, step_id: str, previous: str
) -> None:
    state = _at(step_id)
    step = send(state, say(word))
    assert step.state.step == previous
    assert step.state.answers == state.answers
    assert step.state.invalid_answers == state.invalid_answers


def test_going_back_and_answering_again_moves_forward_again() -> None:
    state = send(_at("gender"), say("back")).state
    state = send(state, say("04/05/1970")).state
    assert state.step == "gender"
    assert state.answers["date_of_birth"] == "1970-05-04"
    assert state.answers["name"] == "Maria Lopez"


@pytest.mark.parametrize("word", BACK_WORDS)
def test_back_from_the_first_question_says_there_is_none_before(word: str) -> None:
    state = _at("language")
    step = send(state, say(word))
    assert step.state == state
    note, question = step.replies
    assert text("en", "back_at_start") in note.body
    assert [button.id for button in question.buttons] == ["language:en", "language:es"]


@pytest.mark.parametrize("word", RESTART_WORDS)
@pytest.mark.parametrize("step_id", ["name", "address", "summary", "edit_choice"])
def test_restart_mid_form_clears_the_answers_and_starts_a_new_draft(
    word: str, step_id: str
) -> None:
    state = replace(_at(step_id), invalid_answers=2)
    step = send(state, say(word), new_record_id=record_id(7))
    assert step.state.step == "language"
    assert step.state.status == "in_progress"
    assert step.state.answers == {}
    assert step.state.consent_at is None
    assert step.state.history == ()
    assert step.state.invalid_answers == 0
    assert step.state.draft_record_id == record_id(7)
    assert step.state.language == "en"
    assert step.effects == ()
    assert text("en", "welcome") in step.replies[0].body


def test_restart_after_completion_starts_a_new_form_keeping_the_record_ids() -> None:
    done = run([*ENGLISH_ANSWERS, tap("summary", "confirm")])[-1].state
    step = send(done, say("reiniciar"), new_record_id=record_id(8))
    assert step.state.status == "in_progress"
    assert step.state.step == "language"
    assert step.state.record_ids == (FIRST_ID,)
    assert step.state.draft_record_id == record_id(8)
    second = run([*ENGLISH_ANSWERS[1:], tap("summary", "confirm")], step.state)[-1]
    assert second.state.record_ids == (FIRST_ID, record_id(8))
    assert second.effects[0].record["record_id"] == record_id(8)


def test_restart_from_the_summary_button_starts_again() -> None:
    step = send(summary_state(), tap("summary", "restart"), new_record_id=record_id(9))
    assert (step.state.step, step.state.answers) == ("language", {})


@pytest.mark.parametrize("word", STOP_WORDS)
@pytest.mark.parametrize("step_id", ["language", "name", "summary"])
def test_stop_opts_out_and_clears_the_answers(word: str, step_id: str) -> None:
    step = send(_at(step_id), say(word))
    assert step.state.status == "opted_out"
    assert step.state.answers == {}
    assert step.state.step is None
    assert step.state.draft_record_id is None
    assert step.effects == ()
    assert step.replies == (Reply(text(step.state.language, "stopped")),)


def test_a_patient_who_stopped_and_writes_again_starts_over_at_the_welcome() -> None:
    stopped = send(_at("address"), say("parar")).state
    step = send(stopped, say("hello again"), new_record_id=record_id(5))
    assert step.state.status == "in_progress"
    assert step.state.step == "language"
    assert step.state.draft_record_id == record_id(5)
    assert text("en", "welcome") in step.replies[0].body


def test_a_template_stop_button_opts_the_patient_out() -> None:
    invited = invite(QUESTIONNAIRE, None)
    step = send(invited, Inbound("choice", "Stop", "STOP"))
    assert step.state.status == "opted_out"


@pytest.mark.parametrize("word", ERASE_WORDS)
@pytest.mark.parametrize("step_id", ["consent", "gender", "summary"])
def test_delete_my_data_asks_for_confirmation_first(word: str, step_id: str) -> None:
    state = _at(step_id)
    step = send(state, say(word))
    assert step.state == replace(state, pending_command="erase")
    (question,) = step.replies
    assert [button.id for button in question.buttons] == ["erase:yes", "erase:no"]
    assert step.effects == ()


@pytest.mark.parametrize(
    "yes", [tap("erase", "yes", "Yes, delete"), say("yes"), say("sí"), say("Si")]
)
def test_confirming_delete_my_data_erases_every_record_and_the_draft(yes: Inbound) -> None:
    done = run([*ENGLISH_ANSWERS, tap("summary", "confirm")])[-1].state
    again = send(done, say("restart")).state
    midway = run(ENGLISH_ANSWERS[1:5], again)[-1].state
    asked = send(midway, say("delete my data")).state
    step = send(asked, yes)
    assert step.effects[0].kind == "erase_records"
    assert step.effects[0].record_ids == (FIRST_ID,)
    assert step.state == ConversationState()
    assert step.replies == (Reply(text("en", "erased")),)


@pytest.mark.parametrize("no", [tap("erase", "no", "No, keep it"), say("no"), say("cancelar")])
def test_cancelling_delete_my_data_returns_to_where_the_patient_was(no: Inbound) -> None:
    state = _at("gender")
    asked = send(state, say("borrar mis datos")).state
    step = send(asked, no)
    assert step.state == state
    assert step.effects == ()
    cancelled, question = step.replies
    assert cancelled.body == text("en", "erase_cancelled")
    assert question.body == text("en", "ask_gender")


def test_an_unclear_answer_to_delete_my_data_asks_again() -> None:
    asked = send(_at("gender"), say("delete my data")).state
    for inbound in [say("female"), MEDIA, tap("gender", "female")]:
        step = send(asked, inbound)
        assert step.state == asked
        assert step.replies[0].body == text("en", "erase_reask")


def test_another_command_while_delete_my_data_waits_cancels_it_and_runs() -> None:
    state = _at("gender")
    asked = send(state, say("delete my data")).state
    step = send(asked, say("help"))
    assert step.state == state


def test_delete_my_data_before_any_form_erases_nothing_but_is_answered() -> None:
    asked = send(None, say("borrar mis datos")).state
    step = send(asked, say("sí"))
    assert step.effects[0].record_ids == ()


# Consent, media, completion -------------------------------------------------------------------


@pytest.mark.parametrize("no", [tap("consent", "no", "No"), say("no"), say("No.")])
def test_declining_consent_ends_politely_and_keeps_nothing(no: Inbound) -> None:
    step = send(_at("consent"), no)
    assert step.state.status == "opted_out"
    assert step.state.answers == {}
    assert step.state.consent_at is None
    assert step.effects == ()
    assert step.replies == (Reply(text("en", "consent_declined")),)


@pytest.mark.parametrize("step_id", ["language", "name", "gender", "summary", "edit_choice"])
def test_media_mid_form_asks_for_text_and_changes_nothing(step_id: str) -> None:
    state = _at(step_id)
    step = send(state, MEDIA)
    assert step.state == state
    assert step.replies == (Reply(text(state.language, "unsupported_message")),)


def test_media_as_a_first_message_starts_the_form() -> None:
    assert send(None, MEDIA).state.step == "language"


def test_a_completed_patient_who_writes_is_given_the_reference_and_how_to_restart() -> None:
    done = run([*ENGLISH_ANSWERS, tap("summary", "confirm")])[-1].state
    for inbound in [say("hello"), MEDIA, tap("summary", "confirm"), say("back")]:
        step = send(done, inbound)
        assert step.state == done
        assert step.effects == ()
        assert step.replies == (
            Reply(text("en", "already_completed", reference=reference_code(FIRST_ID))),
        )


def test_no_at_consent_is_an_answer_and_none_at_a_list_is_an_answer() -> None:
    assert send(_at("consent"), say("no")).state.status == "opted_out"
    step = send(_at("medical_conditions"), say("None"))
    assert step.state.answers["medical_conditions"] == []


# Editing from the summary ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "answer", "stored"),
    [
        ("name", say("Maria Fernanda Lopez"), "Maria Fernanda Lopez"),
        ("date_of_birth", say("February 4, 1981"), "1981-02-04"),
        ("gender", tap("gender", "other"), "other"),
        ("address", say("7 Low Road, Shelbyville"), "7 Low Road, Shelbyville"),
        ("medical_conditions", say("nada"), []),
        ("current_medications", say("aspirin, statins"), ["aspirin", "statins"]),
    ],
)
def test_an_edited_answer_is_stored_and_the_summary_shown_again(
    field: str, answer: Inbound, stored: object
) -> None:
    listing = send(summary_state(), tap("summary", "edit", "Edit"))
    assert listing.state.step == "edit_choice"
    (choose,) = listing.replies
    assert len(choose.rows) == 7 and choose.list_button == text("en", "list_button_choose_field")
    editing = send(listing.state, tap("edit_choice", field))
    assert editing.state.step == field
    assert editing.state.returning_to_summary
    assert editing.state.status == "confirming"
    back = send(editing.state, answer)
    assert back.state.step == "summary"
    assert not back.state.returning_to_summary
    assert back.state.answers[field] == stored
    assert back.state.history == summary_state().history
    others = {key: value for key, value in back.state.answers.items() if key != field}
    assert others == {key: v for key, v in summary_state().answers.items() if key != field}


def test_changing_the_language_from_the_summary_shows_it_in_the_new_language() -> None:
    listing = send(summary_state(), say("edit")).state
    editing = send(listing, say("language")).state
    step = send(editing, tap("language", "es"))
    assert step.state.language == "es"
    assert step.replies[0].body.startswith(text("es", "summary_intro"))


def test_a_wrong_answer_while_editing_is_asked_again_without_leaving_the_edit() -> None:
    listing = send(summary_state(), tap("summary", "edit")).state
    editing = send(listing, tap("edit_choice", "date_of_birth")).state
    step = send(editing, say("31/02/1980"))
    assert step.state.step == "date_of_birth" and step.state.returning_to_summary


@pytest.mark.parametrize("where", ["edit_choice", "name"])
def test_back_while_editing_returns_to_the_summary(where: str) -> None:
    state = send(summary_state(), tap("summary", "edit")).state
    if where == "name":
        state = send(state, tap("edit_choice", "name")).state
    step = send(state, say("back"))
    assert step.state.step == "summary"
    assert step.state.answers == summary_state().answers


def test_confirming_with_an_answer_missing_asks_it_then_returns_to_the_summary() -> None:
    state = summary_state()
    answers = {key: value for key, value in state.answers.items() if key != "address"}
    step = send(replace(state, answers=answers), tap("summary", "confirm"))
    assert step.effects == ()
    assert step.state.step == "address" and step.state.returning_to_summary
    assert send(step.state, say("1 New Street, Town")).state.step == "summary"


def test_a_birth_date_too_old_by_submission_day_is_asked_again() -> None:
    state = replace(
        summary_state(), answers={**summary_state().answers, "date_of_birth": "1905-03-02"}
    )
    step = send(state, tap("summary", "confirm"), now=NOW + timedelta(days=1))
    assert step.effects == ()
    assert step.state.step == "date_of_birth"
    assert step.replies[0].body == text("en", "reask_date_of_birth_too_old")


def test_submission_is_never_recorded_before_consent() -> None:
    state = replace(summary_state(), consent_at=(NOW + timedelta(minutes=1)).isoformat())
    (archive,) = send(state, tap("summary", "confirm")).effects
    assert archive.record["submitted_at"] == archive.record["consent_at"]


# Determinism, invitations, arguments -----------------------------------------------------------


def _conversation_turns() -> list[tuple[ConversationState | None, Inbound]]:
    turns: list[tuple[ConversationState | None, Inbound]] = []
    state = None
    for inbound in [*ENGLISH_ANSWERS, tap("summary", "edit"), tap("edit_choice", "name")]:
        turns.append((state, inbound))
        state = send(state, inbound).state
    turns.append((state, say("Ana Lopez")))
    state = send(state, say("Ana Lopez")).state
    turns.append((state, tap("summary", "confirm")))
    return turns


@pytest.mark.parametrize("turn", range(len(_conversation_turns())))
def test_a_redelivered_message_gives_the_identical_step(turn: int) -> None:
    state, inbound = _conversation_turns()[turn]
    first = advance(QUESTIONNAIRE, state, inbound, NOW, record_id(1))
    again = advance(QUESTIONNAIRE, state, inbound, NOW, record_id(1))
    assert first == again
    if state is not None:  # only a form's first message uses the fresh record id
        assert advance(QUESTIONNAIRE, state, inbound, NOW, record_id(2)) == first


def test_a_redelivered_confirm_archives_under_the_same_record_id() -> None:
    state = summary_state()
    first = send(state, tap("summary", "confirm"), new_record_id=record_id(41))
    again = send(state, tap("summary", "confirm"), new_record_id=record_id(42))
    assert first.effects == again.effects
    assert first.effects[0].record["record_id"] == FIRST_ID


def test_invite_marks_a_new_patient_invited() -> None:
    state = invite(QUESTIONNAIRE, None)
    assert state == ConversationState(status="invited")
    step = send(state, Inbound("choice", "Start", "START"), new_record_id=record_id(3))
    assert step.state.step == "language"
    assert step.state.draft_record_id == record_id(3)


@pytest.mark.parametrize("step_id", ["language", "gender", "summary"])
def test_invite_leaves_a_form_under_way_alone(step_id: str) -> None:
    state = _at(step_id)
    assert invite(QUESTIONNAIRE, state) is state


def test_invite_after_completion_or_opt_out_keeps_the_records_and_language() -> None:
    done = run([*SPANISH_ANSWERS, say("confirmar")])[-1].state
    assert invite(QUESTIONNAIRE, done) == replace(done, status="invited")
    stopped = send(done, say("baja")).state
    assert invite(QUESTIONNAIRE, stopped).status == "invited"
    assert invite(QUESTIONNAIRE, stopped).record_ids == (FIRST_ID,)


def test_advance_refuses_a_malformed_record_id_or_a_naive_time() -> None:
    with pytest.raises(ValueError, match="record id"):
        advance(QUESTIONNAIRE, None, say("hi"), NOW, "not-an-id")
    with pytest.raises(ValueError, match="timezone"):
        advance(QUESTIONNAIRE, None, say("hi"), NOW.replace(tzinfo=None), record_id(1))


# Generated conversations ------------------------------------------------------------------------

OWN_IDS = [
    f"{question.id}:{choice.id}"
    for question in QUESTIONNAIRE.questions
    for choice in question.choices
] + ["erase:yes", "erase:no"]
WORDS = sorted(
    {word for words in QUESTIONNAIRE.commands.values() for word in words}
    | {word for q in QUESTIONNAIRE.questions for c in q.choices for word in c.words}
    | {"Maria Lopez", "03/02/1980", "3 de febrero de 1980", "12 High Street", "none", "a, b"}
    | {"x" * 5000, "31/02/1980", "", "😀", "1,000 IU; 0,5 g\nz"}
)
INBOUNDS = st.one_of(
    st.builds(say, st.sampled_from(WORDS)),
    st.builds(say, st.text(max_size=300)),
    st.builds(
        lambda choice_id, title: Inbound("choice", title, choice_id),
        st.sampled_from([*OWN_IDS, "STOP", "start", ""]),
        st.text(max_size=30),
    ),
    st.just(MEDIA),
    st.builds(Inbound, st.text(max_size=10), st.text(max_size=10), st.text(max_size=10)),
)
VALID_ANSWERS = summary_state().answers
STATES = st.builds(
    ConversationState,
    status=st.sampled_from([*ConversationStatus, "?"]),
    step=st.sampled_from([None, "nowhere", *(q.id for q in QUESTIONNAIRE.questions)]),
    language=st.sampled_from([None, "en", "es", "fr"]),
    invalid_answers=st.integers(0, 50),
    answers=st.dictionaries(st.sampled_from(sorted(VALID_ANSWERS)), st.just(None)).map(
        lambda keys: {key: VALID_ANSWERS[key] for key in keys}
    ),
    history=st.lists(st.sampled_from(["language", "name", "summary", "gone"]), max_size=5).map(
        tuple
    ),
    returning_to_summary=st.booleans(),
    pending_command=st.sampled_from([None, "erase", "unknown"]),
    draft_record_id=st.sampled_from([None, FIRST_ID, "broken"]),
    consent_at=st.sampled_from([None, NOW.isoformat(), "2026-02-01T00:00:00", "garbage"]),
    record_ids=st.lists(st.sampled_from([record_id(n) for n in range(1, 4)]), max_size=3).map(
        tuple
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.one_of(st.none(), STATES), inbound=INBOUNDS)
def test_any_message_in_any_state_gives_replies_within_whatsapp_limits(
    state: ConversationState | None, inbound: Inbound
) -> None:
    step = send(state, inbound)
    assert step.replies
    assert step.state.status in (
        *ConversationStatus,
        "?",
    )  # "?": a stored status this version lacks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(INBOUNDS, min_size=1, max_size=40))
def test_generated_conversations_stay_within_whatsapp_limits(messages: list[Inbound]) -> None:
    state = None
    for number, inbound in enumerate(messages):
        step = send(state, inbound, new_record_id=record_id(number + 1))
        assert step.replies
        if step.state.status in ("in_progress", "confirming"):
            assert QUESTIONNAIRE.question(step.state.step) is not None
        state = step.state


NOISE = [say("help"), say("ayuda"), MEDIA, say("😀"), tap("erase", "yes"), say("delete my data")]


@settings(max_examples=100, deadline=None)
@given(
    language=st.sampled_from(["en", "es"]),
    noise=st.lists(st.lists(st.sampled_from(NOISE), max_size=2), min_size=10, max_size=10),
)
def test_help_media_and_wrong_answers_along_the_way_still_archive_the_same_record(
    language: str, noise: list[list[Inbound]]
) -> None:
    answers = [*(ENGLISH_ANSWERS if language == "en" else SPANISH_ANSWERS)]
    messages = [*answers, tap("summary", "confirm")]
    clean = run(messages)[-1].effects
    noisy: list[Inbound] = []
    for extra, message in zip(noise, messages, strict=True):
        for inbound in extra:
            # "delete my data" is followed by its "no", so the draft survives the detour.
            noisy += [inbound, say("no")] if inbound == say("delete my data") else [inbound]
        noisy.append(message)
    steps = run(noisy, first_id=FIRST_ID)
    record_ids = {step.state.draft_record_id for step in steps if step.state.draft_record_id}
    (archive,) = steps[-1].effects
    assert {**archive.record, "record_id": ""} == {**clean[0].record, "record_id": ""}
    assert archive.record["record_id"] in record_ids


REVIEW_STATES = st.builds(
    ConversationState,
    status=st.just("confirming"),
    step=st.just("summary"),
    language=st.sampled_from([None, "en", "es", "fr"]),
    answers=st.dictionaries(
        st.sampled_from(sorted(VALID_ANSWERS)),
        st.sampled_from(["", "1905-01-01", "2031-01-01", "robot", [], ["a"], 5, None]),
    ).map(lambda broken: {**VALID_ANSWERS, **broken}),
    draft_record_id=st.sampled_from([None, FIRST_ID, "broken"]),
    consent_at=st.sampled_from([None, NOW.isoformat(), "2027-01-01T00:00:00+00:00", "x"]),
)


@settings(max_examples=300, deadline=None)
@given(state=REVIEW_STATES)
def test_confirm_archives_only_a_valid_record_or_asks_for_what_is_missing(
    state: ConversationState,
) -> None:
    step = send(state, tap("summary", "confirm"))  # send() validates any archived record
    if step.effects:
        assert step.state.status == "completed"
    else:
        assert step.state.returning_to_summary
        assert step.state.step in {question.id for question in QUESTIONNAIRE.questions}
