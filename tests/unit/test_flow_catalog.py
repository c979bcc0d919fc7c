import copy
import json
import re
from importlib import resources

import pytest

from service.conversation.flow import catalog
from service.conversation.flow.catalog import LANGUAGES, keys, placeholders, say, text
from service.conversation.flow.questionnaire import load_questionnaire, parse_questionnaire

# Long stand-ins for every placeholder, so a length check covers the worst case.
SAMPLE_PARAMS = {"reference": "WWWW-WWWW-WWWW-WWWW"}
MAX_BUTTON_TITLE = 20
MAX_ROW_TITLE = 24
MAX_LIST_BUTTON = 20
MAX_INTERACTIVE_BODY = 1024
MAX_TEXT_BODY = 4096


def _v1_data() -> dict:
    source = resources.files("service.conversation.flow").joinpath("questionnaire_v1.json")
    return json.loads(source.read_text(encoding="utf-8"))


def _sample(key: str) -> dict[str, str]:
    return {name: SAMPLE_PARAMS.get(name, "W" * 60) for name in placeholders("en", key)}


def test_both_catalogs_have_exactly_the_same_keys() -> None:
    assert keys("en") == keys("es")


@pytest.mark.parametrize("key", sorted(keys("en")))
def test_both_catalogs_use_the_same_placeholders(key: str) -> None:
    assert placeholders("en", key) == placeholders("es", key)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(
    ("prefix", "limit"),
    [("button_", MAX_BUTTON_TITLE), ("label_", MAX_ROW_TITLE), ("list_button_", MAX_LIST_BUTTON)],
)
def test_titles_fit_whatsapp_limits(language: str, prefix: str, limit: int) -> None:
    titles = {key: text(language, key) for key in keys(language) if key.startswith(prefix)}
    assert titles
    assert {key: title for key, title in titles.items() if not 0 < len(title) <= limit} == {}


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_body_fits_an_interactive_message_once_formatted(language: str) -> None:
    bodies = {key: text(language, key, **_sample(key)) for key in keys(language)}
    too_long = {key for key, body in bodies.items() if len(body) > MAX_INTERACTIVE_BODY}
    assert too_long == set()
    assert all(body.strip() for body in bodies.values())


def test_the_bilingual_welcome_and_help_fit_their_messages() -> None:
    questionnaire = load_questionnaire()
    first = questionnaire.first
    assert len(say(None, "welcome", first.prompt)) <= MAX_INTERACTIVE_BODY
    for question in questionnaire.questions:
        assert len(say(None, question.help, "help_commands")) <= MAX_TEXT_BODY
        assert len(say(None, question.reask_key(None))) <= MAX_INTERACTIVE_BODY


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_question_fits_one_message_with_unique_titles(language: str) -> None:
    for question in load_questionnaire().questions:
        titles = [text(language, choice.title) for choice in question.choices]
        assert len(set(titles)) == len(titles)
        if question.list_button:
            assert len(titles) <= 10
        else:
            assert len(titles) <= 3


def test_text_formats_placeholders() -> None:
    assert "ABCD-EFGH-JKMN-PQRS" in text("es", "completed", reference="ABCD-EFGH-JKMN-PQRS")


def test_text_without_a_language_gives_every_language_in_turn() -> None:
    assert text(None, "ask_name") == text("en", "ask_name") + "\n\n" + text("es", "ask_name")


def test_text_refuses_an_unknown_language_or_key() -> None:
    with pytest.raises(ValueError, match="unknown language"):
        text("fr", "ask_name")
    with pytest.raises(KeyError):
        text("en", "no_such_message")


def test_the_packaged_questionnaire_loads_and_is_cached() -> None:
    questionnaire = load_questionnaire("1")
    assert questionnaire is load_questionnaire()
    assert questionnaire.version == "1"
    assert [question.id for question in questionnaire.questions] == [
        "language",
        "consent",
        "name",
        "date_of_birth",
        "gender",
        "address",
        "medical_conditions",
        "current_medications",
        "summary",
        "edit_choice",
    ]


@pytest.mark.parametrize("version", ["2", "../1", "", "1/../../x", "v" * 30])
def test_an_unknown_or_malformed_version_is_refused(version: str) -> None:
    with pytest.raises(ValueError):
        load_questionnaire(version)


def _broken(change: str) -> dict:
    data = copy.deepcopy(_v1_data())
    steps = data["steps"]
    if change == "unknown type":
        steps[2]["type"] = "essay"
    elif change == "missing prompt":
        steps[2]["prompt"] = "no_such_message"
    elif change == "missing reask for a reason":
        steps[2]["reasks"]["too_short"] = "no_such_message"
    elif change == "unknown reason":
        steps[2]["reasks"]["misspelt"] = "reask_name"
    elif change == "duplicate id":
        steps[3]["id"] = "name"
    elif change == "dangling next":
        steps[2]["next"] = "favourite_colour"
    elif change == "unknown parameter":
        steps[2]["params"]["max_lenght"] = 5
    elif change == "unknown step key":
        steps[2]["promt"] = "ask_name"
    elif change == "four buttons":
        steps[4]["choices"].append({"id": "unknown", "title": "button_edit"})
    elif change == "shared words":
        steps[4]["choices"][1]["aliases"].append("f")
    elif change == "no summary":
        steps[7]["next"] = "edit_choice"
        del steps[8]
    elif change == "summary with next":
        steps[8]["next"] = "name"
    elif change == "decline outside a choice":
        steps[8]["choices"][0]["action"] = "decline"
    elif change == "missing command":
        del data["commands"]["stop"]
    elif change == "command word twice":
        data["commands"]["stop"].append("help")
    elif change == "unknown language":
        steps[0]["choices"][1]["id"] = "fr"
    elif change == "reserved id":
        steps[2]["id"] = "erase"
        steps[1]["next"] = "erase"
    elif change == "summary first":
        steps.insert(0, steps.pop(8))
    return data


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("unknown type", "unknown step type 'essay'"),
        ("missing prompt", "name: no message 'no_such_message'"),
        ("missing reask for a reason", "name: no message 'no_such_message'"),
        ("unknown reason", "name: unknown reasks"),
        ("duplicate id", "step ids must be unique"),
        ("dangling next", "name: dangling next"),
        ("unknown parameter", "name: unknown params"),
        ("unknown step key", "name: unknown keys"),
        ("four buttons", "gender: more than 3 choices need a list"),
        ("shared words", "gender.female: words shared"),
        ("no summary", "one summary and one edit step"),
        ("summary with next", "summary: only review steps have no next"),
        ("decline outside a choice", "summary.confirm: action 'decline'"),
        ("missing command", "commands: need"),
        ("command word twice", "shares words with another"),
        ("unknown language", "language: choices must be languages of the catalog"),
        ("reserved id", "the step id 'erase' is reserved"),
        ("summary first", "the form must start with a question"),
    ],
)
def test_a_broken_questionnaire_is_refused_at_load(change: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"invalid questionnaire: .*{re.escape(problem)}"):
        parse_questionnaire(_broken(change))


def test_the_unbroken_questionnaire_data_parses() -> None:
    assert parse_questionnaire(_v1_data()) == load_questionnaire()


def test_a_catalog_key_missing_in_one_language_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(catalog._CATALOGS["es"], "ask_address")
    with pytest.raises(ValueError, match="ask_address"):
        parse_questionnaire(_v1_data())
