"""The messages that ask a question: its prompt with buttons or list rows, and the summary
of every answer (cut to fit WhatsApp's limit). Built from the questionnaire and the catalog."""

from __future__ import annotations

from datetime import date

from service.conversation.flow.catalog import LANGUAGES, MAX_INTERACTIVE_BODY, say, text
from service.conversation.flow.questionnaire import Question, Questionnaire
from service.domain.turns import Button, ConversationState, ListRow, Reply


def question_reply(
    questionnaire: Questionnaire, state: ConversationState, question: Question, intro: str = ""
) -> Reply:
    """Return the message that asks a question, with its buttons or list."""
    if question.type == "summary":
        body = summary_body(questionnaire, state)
    else:
        body = say(state.language, *filter(None, (intro, question.prompt)))
    return choices_reply(question, state.language, body)


def choices_reply(question: Question, language: str | None, body: str) -> Reply:
    """Return body with the question's choices: buttons, or list rows when it has a list."""
    titles = language or LANGUAGES[0]  # a button has room for one language only
    options = [
        (f"{question.id}:{choice.id}", text(titles, choice.title)) for choice in question.choices
    ]
    if not options:
        return Reply(body)
    if question.list_button:
        rows = tuple(ListRow(row_id, title) for row_id, title in options)
        return Reply(body, list_button=text(titles, question.list_button), rows=rows)
    return Reply(body, buttons=tuple(Button(button_id, title) for button_id, title in options))


def summary_body(questionnaire: Questionnaire, state: ConversationState) -> str:
    """Return every answer on one screen, long answers cut so the body fits WhatsApp's limit."""
    language = state.language or LANGUAGES[0]
    labelled = [question for question in questionnaire.questions if question.label]
    labels = [f"*{text(language, question.label)}:* " for question in labelled]
    values = [_shown(question, state, language) for question in labelled]
    head = text(language, questionnaire.summary.prompt) + "\n\n"
    tail = "\n\n" + text(language, "summary_question")
    fixed = len(head) + len(tail) + sum(len(label) for label in labels) + len(labels) - 1
    values = _fit(values, MAX_INTERACTIVE_BODY - fixed)
    lines = "\n".join(label + value for label, value in zip(labels, values, strict=True))
    return head + lines + tail


def _shown(question: Question, state: ConversationState, language: str) -> str:
    """Return an answer as the patient should read it."""
    value = state.language if question.stores == "language" else state.answers.get(question.id)
    if value is None or not question.holds(value):
        return "-"
    choice = question.choice(value) if question.choices else None
    if choice is not None:
        return text(language, choice.title)
    if question.type == "list":
        return ", ".join(value) or text(language, "summary_none")
    if question.type == "date":
        return date.fromisoformat(value).strftime("%d/%m/%Y")
    return ", ".join(value.splitlines())


def _fit(values: list[str], budget: int) -> list[str]:
    """Cut the longest values, each ending in "…", until all of them fit in budget characters."""
    if sum(len(value) for value in values) <= budget:
        return values
    # The largest per-value cap that fits: short values stay whole, long ones share the rest.
    low, high = 1, max(len(value) for value in values)
    while low < high:
        cap = (low + high + 1) // 2
        if sum(min(len(value), cap) for value in values) <= budget:
            low = cap
        else:
            high = cap - 1
    return [value if len(value) <= low else value[: low - 1].rstrip() + "…" for value in values]
