"""The intake form as data: questionnaire_v{version}.json, checked when it is loaded.

A question is one step of the form. Its `type` picks how an answer is read ("choice", "text",
"name", "date", "address", "list"), or marks the two review steps ("summary", "edit": the list
of answers the patient may change, built from every question with a `label`). `stores` says
where a chosen or parsed answer goes: the draft answers under the question id (which is the
IntakeRecord field name), the conversation language, the consent time, or nowhere.

Every mistake in the file (unknown type, key or parameter, a catalog key missing in either
language, duplicate ids, a dangling `next`, too many buttons) is a ValueError at load, so a bad
form never reaches a patient.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from importlib import resources
from types import MappingProxyType
from typing import Any

from service.conversation.flow import catalog, validators
from service.conversation.flow.validators import normalize

# The parameters each answer type takes, passed on to its parser in validators.
PARAMETERS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "choice": frozenset(),
        "text": frozenset({"min_length", "max_length"}),
        "name": frozenset({"min_length", "max_length"}),
        "address": frozenset({"min_length", "max_length"}),
        "date": frozenset({"max_age_years"}),
        "list": frozenset({"max_items", "max_item_length"}),
        "summary": frozenset(),
        "edit": frozenset(),
    }
)
STORES = frozenset({"answer", "language", "consent", "none"})
# What picking a choice does besides storing it, and the question types allowed to use it.
ACTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "": frozenset({"choice"}),
        "decline": frozenset({"choice"}),
        "confirm": frozenset({"summary"}),
        "edit": frozenset({"summary"}),
        "restart": frozenset({"summary"}),
    }
)
COMMANDS = ("help", "back", "restart", "stop", "erase", "resume")
REASONS = frozenset(
    value for name, value in vars(validators).items() if name.isupper() and isinstance(value, str)
)
MAX_BUTTONS = 3
MAX_ROWS = 10
_ID_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_VERSION_PATTERN = re.compile(r"[0-9A-Za-z_-]{1,20}")
_STEP_KEYS = frozenset(
    {"id", "type", "stores", "label", "prompt", "reask", "help", "reasks", "params", "choices"}
    | {"next", "list_button"}
)
_CHOICE_KEYS = frozenset({"id", "title", "action", "aliases"})


@dataclass(frozen=True)
class Choice:
    """One option of a question; `words` are the folded texts a patient may type for it."""

    id: str
    title: str  # catalog key
    action: str = ""
    words: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Question:
    """One step of the form: how to ask, how to read the answer, where it goes, what is next."""

    id: str
    type: str
    prompt: str  # catalog keys from here on
    reask: str
    help: str
    label: str = ""  # shown in the summary and offered for editing when set
    stores: str = "answer"
    next: str | None = None
    choices: tuple[Choice, ...] = ()
    list_button: str = ""  # set: the choices are list rows rather than buttons
    reasks: Mapping[str, str] = field(default_factory=dict)  # validator reason -> catalog key
    params: Mapping[str, int] = field(default_factory=dict)

    def reask_key(self, reason: str | None) -> str:
        """Return the catalog key of the re-ask for a refused answer."""
        return self.reasks.get(reason or "", self.reask)

    def choice(self, choice_id: str) -> Choice | None:
        """Return the choice with this id, if the question has it."""
        return next((choice for choice in self.choices if choice.id == choice_id), None)

    def holds(self, value: object) -> bool:
        """Tell whether a stored draft answer has the form this question stores."""
        if self.type == "list":
            return isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)
        if not isinstance(value, str):
            return False
        if self.choices:
            return self.choice(value) is not None
        if self.type == "date":
            try:
                return date.fromisoformat(value).isoformat() == value
            except ValueError:
                return False
        return bool(value.strip())

    def match(self, typed: str) -> Choice | None:
        """Return the choice a typed answer names (id, title in any language, or alias)."""
        folded = normalize(typed)
        return next((choice for choice in self.choices if folded in choice.words), None)


@dataclass(frozen=True)
class Questionnaire:
    """A validated form: its questions in order, and the words of the commands."""

    version: str
    questions: tuple[Question, ...]
    commands: Mapping[str, frozenset[str]]
    confirmation: Mapping[str, frozenset[str]]  # "yes" / "no" words for "delete my data"

    @property
    def first(self) -> Question:
        """The question a new form starts with."""
        return self.questions[0]

    @property
    def summary(self) -> Question:
        """The step that shows every answer for confirmation."""
        return next(question for question in self.questions if question.type == "summary")

    @property
    def edit(self) -> Question:
        """The step that lists the answers the patient may change."""
        return next(question for question in self.questions if question.type == "edit")

    def question(self, step_id: str | None) -> Question | None:
        """Return the question with this id, or None for an id this form does not have."""
        return next((question for question in self.questions if question.id == step_id), None)

    def command(self, typed: str) -> str | None:
        """Return the command a typed message is, if it is one."""
        folded = normalize(typed)
        return next((name for name, words in self.commands.items() if folded in words), None)


def load_questionnaire(version: str = "1") -> Questionnaire:
    """Read and validate the packaged questionnaire of a version (cached)."""
    return _load_questionnaire(version)


@functools.cache
def _load_questionnaire(version: str) -> Questionnaire:
    if not isinstance(version, str) or not _VERSION_PATTERN.fullmatch(version):
        raise ValueError("questionnaire version must be 1 to 20 letters, digits, _ or -")
    source = resources.files(__package__).joinpath(f"questionnaire_v{version}.json")
    if not source.is_file():
        raise ValueError(f"unknown questionnaire version {version!r}")
    questionnaire = parse_questionnaire(json.loads(source.read_text(encoding="utf-8")))
    if questionnaire.version != version:
        raise ValueError(f"questionnaire_v{version}.json declares version {questionnaire.version}")
    return questionnaire


def parse_questionnaire(data: Any) -> Questionnaire:
    """Build a Questionnaire from its JSON form; raise ValueError naming the first mistake."""
    _require(isinstance(data, dict), "the questionnaire must be a JSON object")
    _require(set(data) == {"version", "commands", "confirmation", "steps"}, "top-level keys")
    version = data["version"]
    _require(isinstance(version, str) and _VERSION_PATTERN.fullmatch(version), "version")
    commands = _word_sets(data["commands"], COMMANDS, "commands")
    confirmation = _word_sets(data["confirmation"], ("yes", "no"), "confirmation")
    steps = data["steps"]
    _require(isinstance(steps, list) and steps, "steps must be a non-empty list")
    questions = [_parse_question(step) for step in steps]
    ids = [question.id for question in questions]
    _require(len(set(ids)) == len(ids), "step ids must be unique")
    for question in questions:
        _require(question.next is None or question.next in ids, f"{question.id}: dangling next")
    _require(questions[0].type not in ("summary", "edit"), "the form must start with a question")
    for question in questions:
        if question.stores == "language":
            known = {choice.id for choice in question.choices} <= set(catalog.LANGUAGES)
            _require(known, f"{question.id}: choices must be languages of the catalog")
    questions = _with_edit_choices(questions)
    return Questionnaire(version, tuple(questions), commands, confirmation)


def _parse_question(step: Any) -> Question:
    _require(isinstance(step, dict) and isinstance(step.get("id"), str), "a step needs an id")
    step_id = step["id"]
    _require(_ID_PATTERN.fullmatch(step_id), f"{step_id!r}: ids are lower-case words")
    # The engine's "delete my data" buttons are "erase:yes" and "erase:no".
    _require(step_id != "erase", "the step id 'erase' is reserved")
    _require(set(step) <= _STEP_KEYS, f"{step_id}: unknown keys {sorted(set(step) - _STEP_KEYS)}")
    step_type = step.get("type")
    _require(step_type in PARAMETERS, f"{step_id}: unknown step type {step_type!r}")
    review = step_type in ("summary", "edit")
    stores = step.get("stores", "none" if review else "answer")
    _require(stores in STORES and (stores == "none" or not review), f"{step_id}: stores")
    _require((step.get("next") is None) == review, f"{step_id}: only review steps have no next")
    _check_messages(step_id, step)
    params = step.get("params", {})
    _require(isinstance(params, dict), f"{step_id}: params must be an object")
    _require(set(params) <= PARAMETERS[step_type], f"{step_id}: unknown params")
    _require(all(type(value) is int and value > 0 for value in params.values()), "params")
    choices = tuple(_parse_choice(step_id, step_type, choice) for choice in step.get("choices", ()))
    _require(bool(choices) == (step_type in ("choice", "summary")), f"{step_id}: choices")
    question = Question(
        id=step_id,
        type=step_type,
        prompt=step["prompt"],
        reask=step["reask"],
        help=step["help"],
        label=step.get("label", ""),
        stores=stores,
        next=step.get("next"),
        choices=choices,
        list_button=step.get("list_button", ""),
        reasks=MappingProxyType(dict(step.get("reasks", {}))),
        params=MappingProxyType(dict(params)),
    )
    _check_choices(question)
    return question


def _check_messages(step_id: str, step: dict[str, Any]) -> None:
    """Check every catalog key a step names exists in every language."""
    for key in ("prompt", "reask", "help"):
        _require_message(step_id, step.get(key))
    for key in ("label", "list_button"):
        if key in step:
            _require_message(step_id, step[key])
    reasks = step.get("reasks", {})
    _require(isinstance(reasks, dict) and set(reasks) <= REASONS, f"{step_id}: unknown reasks")
    for key in reasks.values():
        _require_message(step_id, key)


def _parse_choice(step_id: str, step_type: str, choice: Any) -> Choice:
    _require(isinstance(choice, dict) and set(choice) <= _CHOICE_KEYS, f"{step_id}: choice keys")
    choice_id, action = choice.get("id"), choice.get("action", "")
    _require(isinstance(choice_id, str) and _ID_PATTERN.fullmatch(choice_id), f"{step_id}: id")
    _require(step_type in ACTIONS.get(action, ()), f"{step_id}.{choice_id}: action {action!r}")
    _require_message(step_id, choice.get("title"))
    aliases = choice.get("aliases", [])
    _require(isinstance(aliases, list) and all(isinstance(a, str) for a in aliases), "aliases")
    return Choice(choice_id, choice["title"], action, _words(choice["title"], choice_id, aliases))


def _with_edit_choices(questions: list[Question]) -> list[Question]:
    """Give the edit step one choice per labelled question, and check the review steps."""
    summaries = [question for question in questions if question.type == "summary"]
    edits = [question for question in questions if question.type == "edit"]
    _require(len(summaries) == 1 and len(edits) == 1, "one summary and one edit step are needed")
    rows = tuple(
        Choice(question.id, question.label, "", _words(question.label, question.id, []))
        for question in questions
        if question.label
    )
    edit = replace(edits[0], choices=rows)
    _check_choices(edit)
    return [edit if question is edits[0] else question for question in questions]


def _check_choices(question: Question) -> None:
    """Check the choices fit one WhatsApp message and a typed word picks at most one of them."""
    if question.type == "edit" or len(question.choices) > MAX_BUTTONS:
        _require(bool(question.list_button), f"{question.id}: more than 3 choices need a list")
    _require(len(question.choices) <= MAX_ROWS, f"{question.id}: more than 10 choices")
    ids = [choice.id for choice in question.choices]
    _require(len(set(ids)) == len(ids), f"{question.id}: choice ids must be unique")
    for language in catalog.LANGUAGES:
        titles = [catalog.text(language, choice.title) for choice in question.choices]
        _require(len(set(titles)) == len(titles), f"{question.id}: titles must be unique")
    for choice in question.choices:
        others = set().union(*(other.words for other in question.choices if other is not choice))
        _require(not choice.words & others, f"{question.id}.{choice.id}: words shared")


def _words(title: str, choice_id: str, aliases: list[str]) -> frozenset[str]:
    titles = [catalog.text(language, title) for language in catalog.LANGUAGES]
    return frozenset(normalize(word) for word in [choice_id, *titles, *aliases])


def _word_sets(data: Any, names: tuple[str, ...], what: str) -> Mapping[str, frozenset[str]]:
    _require(isinstance(data, dict) and set(data) == set(names), f"{what}: need {names}")
    sets = {}
    for name in names:
        words = data[name]
        _require(isinstance(words, list) and words, f"{what}.{name} must list words")
        _require(all(isinstance(word, str) and normalize(word) for word in words), what)
        sets[name] = frozenset(normalize(word) for word in words)
    for name in names:
        others = set().union(*(words for other, words in sets.items() if other != name))
        _require(not sets[name] & others, f"{what}: {name} shares words with another")
    return MappingProxyType(sets)


def _require_message(step_id: str, key: Any) -> None:
    _require(isinstance(key, str) and catalog.has(key), f"{step_id}: no message {key!r}")


def _require(condition: object, problem: str) -> None:
    if not condition:
        raise ValueError(f"invalid questionnaire: {problem}")
