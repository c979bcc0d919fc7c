"""The intake conversation: state + one inbound message -> new state, replies and effects.

Pure: no clock (the caller passes `now`, the message's own timestamp), no randomness (the
caller passes a fresh `new_record_id`), no I/O. The same state, message and `now` always give
the same Step, so a redelivered webhook cannot fork a conversation.

The behaviour choices are listed in the package docstring (service/conversation/flow/__init__.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

from service.conversation.flow import catalog, validators
from service.conversation.flow.catalog import say
from service.conversation.flow.prompts import choices_reply, question_reply
from service.conversation.flow.questionnaire import Choice, Question, Questionnaire
from service.domain.record import SCHEMA_VERSION, is_record_id, reference_code
from service.domain.turns import (
    Button,
    ConversationState,
    ConversationStatus,
    Effect,
    Inbound,
    Reply,
    Step,
)

IN_FORM = frozenset({ConversationStatus.IN_PROGRESS, ConversationStatus.CONFIRMING})
ERASE = "erase"
_ERASE_YES = f"{ERASE}:yes"
_ERASE_NO = f"{ERASE}:no"


@dataclass(frozen=True)
class _Turn:
    """One inbound message being handled, with everything the handlers need."""

    questionnaire: Questionnaire
    state: ConversationState
    inbound: Inbound
    now: datetime
    new_record_id: str

    @property
    def question(self) -> Question | None:
        """The question being asked, or None when no form is under way."""
        if self.state.status not in IN_FORM:
            return None
        return self.questionnaire.question(self.state.step)

    def say(self, *keys: str, **params: object) -> Reply:
        """A plain text reply in the patient's language."""
        return Reply(say(self.state.language, *keys, **params))


def advance(
    questionnaire: Questionnaire,
    state: ConversationState | None,
    inbound: Inbound,
    now: datetime,
    new_record_id: str,
) -> Step:
    """Handle one message from the patient and return what to store, send and do."""
    if not is_record_id(new_record_id):
        raise ValueError("new_record_id is not a record id")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    current = state or ConversationState(questionnaire_version=questionnaire.version)
    if current.language not in catalog.LANGUAGES:  # never chosen, or one we no longer speak
        current = replace(current, language=None)
    turn = _Turn(questionnaire, current, inbound, now, new_record_id)
    if current.pending_command == ERASE:
        return _answer_erase(turn)
    command = _command(turn)
    if command is not None:
        return _COMMANDS[command](turn)
    return _reply_to_message(turn)


def invite(questionnaire: Questionnaire, state: ConversationState | None) -> ConversationState:
    """Return the state after the start template went out; a form under way is left alone."""
    if state is not None and state.status in IN_FORM:
        return state
    return replace(
        _cleared(state or ConversationState()),
        status=ConversationStatus.INVITED,
        questionnaire_version=questionnaire.version,
        invalid_answers=0,
    )


def remind(questionnaire: Questionnaire, state: ConversationState, intro: str) -> tuple[Reply, ...]:
    """Return a reminder for a form under way: a friendly line and the current question again,
    with its buttons or list; nothing when no form is under way."""
    question = questionnaire.question(state.step) if state.status in IN_FORM else None
    if question is None:
        return ()
    if question.type == "summary":  # the summary fills its body: the line goes on its own
        return (Reply(say(state.language, intro)), question_reply(questionnaire, state, question))
    return (question_reply(questionnaire, state, question, intro=intro),)


def _reply_to_message(turn: _Turn) -> Step:
    """Answer a message that is not a command: an answer, or a first message."""
    question = turn.question
    if question is not None:
        if turn.inbound.kind not in ("text", "choice"):
            return Step(turn.state, (turn.say("unsupported_message"),))
        return _answer(turn, question)
    record_ids = [record_id for record_id in turn.state.record_ids if is_record_id(record_id)]
    if turn.state.status == ConversationStatus.COMPLETED and record_ids:
        reference = reference_code(record_ids[-1])
        return Step(turn.state, (turn.say("already_completed", reference=reference),))
    return _start_form(turn)


def _command(turn: _Turn) -> str | None:
    """Return the command the message is, unless it answers the current question."""
    inbound, questionnaire = turn.inbound, turn.questionnaire
    if inbound.kind == "choice":
        if _is_own_id(questionnaire, inbound.choice_id):
            return None
        # A template quick-reply button: its payload or its title may be a command.
        return questionnaire.command(inbound.choice_id) or questionnaire.command(inbound.text)
    if inbound.kind != "text":
        return None
    question = turn.question
    if question is not None and question.match(inbound.text) is not None:
        return None
    return questionnaire.command(inbound.text)


def _is_own_id(questionnaire: Questionnaire, choice_id: str) -> bool:
    step_id, separator, _ = choice_id.partition(":")
    return bool(separator) and (step_id == ERASE or questionnaire.question(step_id) is not None)


def _answer(turn: _Turn, question: Question) -> Step:
    """Read the answer to the current question, store it and move on, or ask again."""
    if question.choices:
        choice = _picked(turn, question)
        if choice is None:
            return _reask(turn, question, None)
        return _choose(turn, question, choice)
    if turn.inbound.kind != "text":
        return _reask(turn, question, None)
    try:
        today = turn.now.astimezone(UTC).date()
        value = validators.parse_answer(question.type, turn.inbound.text, today, question.params)
    except validators.AnswerError as error:
        return _reask(turn, question, error.reason)
    answers = {**turn.state.answers, question.id: value}
    return _move_on(turn, question, replace(turn.state, answers=answers))


def _picked(turn: _Turn, question: Question) -> Choice | None:
    inbound = turn.inbound
    if inbound.kind == "text":
        return question.match(inbound.text)
    step_id, _, choice_id = inbound.choice_id.partition(":")
    return question.choice(choice_id) if step_id == question.id else None


def _choose(turn: _Turn, question: Question, choice: Choice) -> Step:
    """Act on a picked choice: a review action, or an answer to store."""
    state = turn.state
    if choice.action == "decline":
        return _opt_out(turn, "consent_declined")
    if choice.action == "confirm":
        return _submit(turn)
    if choice.action == "restart":
        return _start_form(turn)
    if choice.action == "edit":
        return _go_to(turn, state, turn.questionnaire.edit, state.history)
    if question.type == "edit":
        target = turn.questionnaire.question(choice.id)
        return _go_to(turn, state, target, state.history, editing=True)
    if question.stores == "language":
        state = replace(state, language=choice.id)
    elif question.stores == "consent":
        state = replace(state, consent_at=_instant(turn.now))
    elif question.stores == "answer":
        state = replace(state, answers={**state.answers, question.id: choice.id})
    return _move_on(turn, question, state)


def _move_on(turn: _Turn, question: Question, state: ConversationState) -> Step:
    """Ask the next question, or show the summary again after an edit."""
    if state.returning_to_summary:
        return _go_to(turn, state, turn.questionnaire.summary, state.history)
    target = turn.questionnaire.question(question.next)
    return _go_to(turn, state, target, (*state.history, question.id))


def _go_to(
    turn: _Turn,
    state: ConversationState,
    target: Question | None,
    history: tuple[str, ...],
    editing: bool = False,
) -> Step:
    """Make `target` the current question and ask it."""
    if target is None:  # a form whose `next` vanished between versions: start it afresh
        return _start_form(turn)
    reviewing = editing or target.type in ("summary", "edit")
    state = replace(
        state,
        step=target.id,
        status=ConversationStatus.CONFIRMING if reviewing else ConversationStatus.IN_PROGRESS,
        history=history,
        returning_to_summary=editing,
    )
    return Step(state, (question_reply(turn.questionnaire, state, target),))


def _reask(turn: _Turn, question: Question, reason: str | None) -> Step:
    """Ask the current question again, saying what was expected."""
    state = replace(turn.state, invalid_answers=turn.state.invalid_answers + 1)
    body = say(state.language, question.reask_key(reason))
    return Step(state, (choices_reply(question, state.language, body),))


def _start_form(turn: _Turn) -> Step:
    """Start a new form at the welcome and the first question, under a new draft record id."""
    questionnaire = turn.questionnaire
    state = replace(
        _cleared(turn.state),
        status=ConversationStatus.IN_PROGRESS,
        step=questionnaire.first.id,
        questionnaire_version=questionnaire.version,
        draft_record_id=turn.new_record_id,
        invalid_answers=0,
    )
    return Step(
        state, (question_reply(questionnaire, state, questionnaire.first, intro="welcome"),)
    )


def _opt_out(turn: _Turn, message: str) -> Step:
    state = replace(_cleared(turn.state), status=ConversationStatus.OPTED_OUT)
    return Step(state, (turn.say(message),))


def _cleared(state: ConversationState) -> ConversationState:
    """Drop the draft and everything tied to it; keep the language and completed record ids."""
    return replace(
        state,
        step=None,
        answers={},
        history=(),
        returning_to_summary=False,
        pending_command=None,
        draft_record_id=None,
        consent_at=None,
    )


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _submit(turn: _Turn) -> Step:
    """Archive the confirmed form, or take the patient to an answer that needs redoing."""
    state, questionnaire = turn.state, turn.questionnaire
    consent_at = _parse_instant(state.consent_at) or turn.now
    # `now` is the Confirm message's own timestamp and messages may be handled out of order:
    # never let submission precede consent, which the archived record would refuse.
    submitted_at = max(turn.now, consent_at)
    answers, gap = _checked_answers(turn, submitted_at.astimezone(UTC).date())
    if gap is not None:
        question, reason = gap
        step = _go_to(turn, state, question, state.history, editing=True)
        if reason is None:
            return step
        return replace(step, replies=(turn.say(question.reask_key(reason)), *step.replies))
    record_id = state.draft_record_id
    if not is_record_id(record_id):  # a draft from before ids were kept: no redelivery to match
        record_id = turn.new_record_id
    record = {
        "record_id": record_id,
        "submitted_at": _instant(submitted_at),
        **answers,
        "language": state.language,
        "consent_at": _instant(consent_at),
        "questionnaire_version": questionnaire.version,
        "schema_version": SCHEMA_VERSION,
    }
    done = replace(
        _cleared(state),
        status=ConversationStatus.COMPLETED,
        record_ids=(*state.record_ids, record_id),
    )
    reply = turn.say("completed", reference=reference_code(record_id))
    return Step(done, (reply,), (Effect("archive", record=record),))


def _checked_answers(
    turn: _Turn, today: date
) -> tuple[dict[str, object], tuple[Question, str | None] | None]:
    """Return the draft answers checked again on the submission day, or the first gap.

    Each stored answer goes through its parser once more: a draft may predate a rule (or an
    age limit may have been crossed since), and the archive must never receive an invalid
    record. A gap is the question to ask again and the reason, if the answer was refused.
    """
    state = turn.state
    answers: dict[str, object] = {}
    for question in turn.questionnaire.questions:
        if question.stores == "language" and state.language is None:
            return answers, (question, None)
        if question.stores == "consent" and _parse_instant(state.consent_at) is None:
            return answers, (question, None)
        if question.stores != "answer":
            continue
        value = state.answers.get(question.id)
        if value is None or not question.holds(value):
            return answers, (question, None)
        if question.choices:
            answers[question.id] = value
            continue
        retyped = ("\n".join(value) or "none") if isinstance(value, list | tuple) else value
        try:
            answers[question.id] = validators.parse_answer(
                question.type, retyped, today, question.params
            )
        except validators.AnswerError as error:
            return answers, (question, error.reason)
    return answers, None


def _parse_instant(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _help(turn: _Turn) -> Step:
    """Explain the current question and the commands; change nothing."""
    question = turn.question
    if question is None:
        return Step(turn.state, (turn.say("help_idle", "help_commands"),))
    explanation = turn.say(question.help, "help_commands")
    return Step(turn.state, (explanation, question_reply(turn.questionnaire, turn.state, question)))


def _back(turn: _Turn) -> Step:
    """Go to the previous question, keeping every answer."""
    question, state = turn.question, turn.state
    if question is None:
        return _reply_to_message(turn)
    if state.returning_to_summary or question.type == "edit":
        return _go_to(turn, state, turn.questionnaire.summary, state.history)
    history = [step for step in state.history if turn.questionnaire.question(step) is not None]
    if not history:
        again = question_reply(turn.questionnaire, state, question)
        return Step(state, (turn.say("back_at_start"), again))
    previous = turn.questionnaire.question(history[-1])
    return _go_to(turn, state, previous, tuple(history[:-1]))


def _resume(turn: _Turn) -> Step:
    """Ask the current question again (a reminder's "Continue" button); change nothing."""
    question = turn.question
    if question is None:
        return _reply_to_message(turn)
    return Step(turn.state, (question_reply(turn.questionnaire, turn.state, question),))


def _stop(turn: _Turn) -> Step:
    return _opt_out(turn, "stopped")


def _ask_erase(turn: _Turn) -> Step:
    """Ask the patient to confirm that every record of theirs is to be erased."""
    state = replace(turn.state, pending_command=ERASE)
    return Step(state, (_erase_question(state.language, "erase_confirm"),))


def _erase_question(language: str | None, key: str) -> Reply:
    titles = language or catalog.LANGUAGES[0]
    buttons = (
        Button(_ERASE_YES, catalog.text(titles, "button_erase_yes")),
        Button(_ERASE_NO, catalog.text(titles, "button_erase_no")),
    )
    return Reply(say(language, key), buttons=buttons)


def _answer_erase(turn: _Turn) -> Step:
    """Erase on yes, go back to where the patient was on no; any other command cancels."""
    state, questionnaire = turn.state, turn.questionnaire
    answer = _yes_or_no(turn)
    if answer == "yes":
        erased = ConversationState(questionnaire_version=questionnaire.version)
        effect = Effect("erase_records", record_ids=state.record_ids)
        return Step(erased, (turn.say("erased"),), (effect,))
    resumed = replace(turn, state=replace(state, pending_command=None))
    if answer == "no":
        question = resumed.question
        where = (
            () if question is None else (question_reply(questionnaire, resumed.state, question),)
        )
        return Step(resumed.state, (turn.say("erase_cancelled"), *where))
    command = _command(resumed)
    if command is not None:
        return _COMMANDS[command](resumed)
    return Step(state, (_erase_question(state.language, "erase_reask"),))


def _yes_or_no(turn: _Turn) -> str | None:
    inbound = turn.inbound
    if inbound.kind == "choice":
        return {_ERASE_YES: "yes", _ERASE_NO: "no"}.get(inbound.choice_id)
    if inbound.kind != "text":
        return None
    folded = validators.normalize(inbound.text)
    words = turn.questionnaire.confirmation.items()
    return next((answer for answer, accepted in words if folded in accepted), None)


_COMMANDS = {
    "help": _help,
    "back": _back,
    "restart": _start_form,
    "stop": _stop,
    "erase": _ask_erase,
    "resume": _resume,
}
