from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.conversation.flow import validators
from service.conversation.flow.questionnaire import load_questionnaire
from service.conversation.flow.validators import (
    AnswerError,
    check_date_of_birth,
    normalize,
    parse_address,
    parse_date,
    parse_date_of_birth,
    parse_list,
    parse_name,
)
from service.domain.record import InvalidRecordError, validate
from tests.support.records import make_record

TODAY = date(2026, 3, 1)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("Maria Lopez", "Maria Lopez"),
        ("  maria   lopez \n", "maria lopez"),
        ("Zoë Núñez", "Zoë Núñez"),
        ("李小龍", "李小龍"),
        ("Al", "Al"),
        ("O'Brien-Smith Jr.", "O'Brien-Smith Jr."),
        ("x" * 100, "x" * 100),
    ],
)
def test_names_are_accepted_with_their_spaces_tidied(typed: str, expected: str) -> None:
    assert parse_name(typed) == expected


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", validators.BLANK),
        ("   \n ", validators.BLANK),
        ("A", validators.TOO_SHORT),
        ("x" * 101, validators.TOO_LONG),
        ("😀😀", validators.NO_TEXT),
        ("...", validators.NO_TEXT),
        ("1234", validators.NO_LETTER),
        ("Ana\x00Lopez", validators.INVALID_CHARACTERS),
    ],
)
def test_names_that_cannot_be_used_are_refused_with_a_reason(typed: str, reason: str) -> None:
    with pytest.raises(AnswerError) as refused:
        parse_name(typed)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    "typed",
    [
        "03/02/1980",
        "3/2/1980",
        "03-02-1980",
        "3.2.1980",
        "03.02.1980.",
        "1980-02-03",
        "1980/2/3",
        " 03 / 02 / 1980 ",
        "3 Feb 1980",
        "3 feb. 1980",
        "3rd February 1980",
        "3rd of February, 1980",
        "February 3, 1980",
        "Feb 3 1980",
        "3 de febrero de 1980",
        "3 febrero 1980",
        "3º de Febrero de 1980",
        "febrero 3, 1980",
        "03 FEBRERO 1980",
    ],
)
def test_dates_are_read_in_many_forms_day_first(typed: str) -> None:
    assert parse_date(typed) == date(1980, 2, 3)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("12 septiembre 1975", date(1975, 9, 12)),
        ("1 sept 1975", date(1975, 9, 1)),
        ("5 de agosto de 2001", date(2001, 8, 5)),
        ("5 ago 2001", date(2001, 8, 5)),
        ("31 dic 1999", date(1999, 12, 31)),
        ("December 31 1999", date(1999, 12, 31)),
        ("29/02/1984", date(1984, 2, 29)),
        ("12/11/1990", date(1990, 11, 12)),
    ],
)
def test_written_months_in_english_and_spanish_are_read(typed: str, expected: date) -> None:
    assert parse_date(typed) == expected


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", validators.BLANK),
        ("   ", validators.BLANK),
        ("31/02/1980", validators.IMPOSSIBLE),
        ("29/02/1981", validators.IMPOSSIBLE),
        ("02/30/1980", validators.IMPOSSIBLE),
        ("13/13/1980", validators.IMPOSSIBLE),
        ("0/1/1980", validators.IMPOSSIBLE),
        ("31 February 1980", validators.IMPOSSIBLE),
        ("03/02/80", validators.SHORT_YEAR),
        ("3 Feb 80", validators.SHORT_YEAR),
        ("03/02/198", validators.FORMAT),
        ("03/02-1980", validators.FORMAT),
        ("3 2 1980", validators.FORMAT),
        ("03021980", validators.FORMAT),
        ("yesterday", validators.FORMAT),
        ("Feb 1980", validators.FORMAT),
        ("3 Feb 1980 10:30", validators.FORMAT),
        ("3 Flob 1980", validators.FORMAT),
        ("🎂", validators.FORMAT),
    ],
)
def test_unreadable_or_impossible_dates_are_refused(typed: str, reason: str) -> None:
    with pytest.raises(AnswerError) as refused:
        parse_date(typed)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("02/03/2026", validators.FUTURE),
        ("01/01/2030", validators.FUTURE),
        ("01/03/1905", validators.TOO_OLD),
        ("28/02/1905", validators.TOO_OLD),
    ],
)
def test_birth_dates_in_the_future_or_over_120_years_ago_are_refused(
    typed: str, reason: str
) -> None:
    with pytest.raises(AnswerError) as refused:
        parse_date_of_birth(typed, TODAY)
    assert refused.value.reason == reason


@pytest.mark.parametrize("typed", ["01/03/2026", "01/03/1906", "02/03/1905"])
def test_birth_dates_of_today_and_of_exactly_120_years_ago_are_accepted(typed: str) -> None:
    assert parse_date_of_birth(typed, TODAY) <= TODAY


@given(
    born=st.dates(min_value=date(1880, 1, 1), max_value=date(2030, 12, 31)),
    today=st.dates(min_value=date(2000, 1, 1), max_value=date(2030, 12, 31)),
)
def test_birth_date_rules_agree_with_the_archived_record_rules(born: date, today: date) -> None:
    submitted_at = datetime(today.year, today.month, today.day, 12, tzinfo=UTC)
    record = make_record(submitted_at=submitted_at, date_of_birth=born)
    try:
        validate(record)
        record_ok = True
    except InvalidRecordError:
        record_ok = False
    try:
        check_date_of_birth(born, today)
        answer_ok = True
    except AnswerError:
        answer_ok = False
    assert answer_ok == record_ok


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("f", "female"),
        ("F", "female"),
        ("Female", "female"),
        ("female.", "female"),
        ("mujer", "female"),
        ("Femenino", "female"),
        ("m", "male"),
        ("MALE", "male"),
        ("hombre", "male"),
        ("masculino", "male"),
        ("o", "other"),
        ("Other", "other"),
        ("otro", "other"),
        ("Otra", "other"),
        ("no binario", "other"),
    ],
)
def test_gender_is_read_from_typed_words_in_both_languages(typed: str, expected: str) -> None:
    gender = load_questionnaire().question("gender")
    assert gender.match(typed).id == expected


@pytest.mark.parametrize("typed", ["", "x", "maybe", "femme", "🙂"])
def test_gender_words_that_are_no_choice_match_nothing(typed: str) -> None:
    assert load_questionnaire().question("gender").match(typed) is None


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("12 High Street, Springfield", "12 High Street, Springfield"),
        ("  Calle Mayor 12 \n\n 28013   Madrid \r\n", "Calle Mayor 12\n28013 Madrid"),
        ("Flat 1", "Flat 1"),
    ],
)
def test_addresses_keep_their_lines_but_not_blank_ones(typed: str, expected: str) -> None:
    assert parse_address(typed) == expected


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", validators.BLANK),
        ("abc", validators.TOO_SHORT),
        ("🏠🏠🏠🏠🏠", validators.NO_TEXT),
        ("x" * 301, validators.TOO_LONG),
        ("Calle\tMayor\x07 12", validators.INVALID_CHARACTERS),
    ],
)
def test_addresses_that_cannot_be_used_are_refused(typed: str, reason: str) -> None:
    with pytest.raises(AnswerError) as refused:
        parse_address(typed)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("asthma, diabetes", ["asthma", "diabetes"]),
        ("asthma;diabetes ; ", ["asthma", "diabetes"]),
        ("asthma\ndiabetes\n\n", ["asthma", "diabetes"]),
        ("- asthma\n• diabetes\n* gout", ["asthma", "diabetes", "gout"]),
        (",, asthma ,,", ["asthma"]),
        ("Paracetamol 0,5 g, ibuprofen", ["Paracetamol 0,5 g", "ibuprofen"]),
        ("Vitamin D 1,000 IU", ["Vitamin D 1,000 IU"]),
        ("asma,  diabetes  tipo 2", ["asma", "diabetes tipo 2"]),
        ("x" * 200, ["x" * 200]),
        (", ".join(["a"] * 50), ["a"] * 50),
    ],
)
def test_lists_split_on_commas_semicolons_and_lines(typed: str, expected: list[str]) -> None:
    assert parse_list(typed) == expected


@pytest.mark.parametrize(
    "typed",
    [
        "none",
        "None.",
        "NO",
        "nil",
        "n/a",
        "N/A.",
        "nothing",
        "ninguno",
        "Ninguna",
        "nada",
        " Nada ",
    ],
)
def test_words_for_nothing_mean_an_empty_list(typed: str) -> None:
    assert parse_list(typed) == []


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", validators.BLANK),
        ("  \n ", validators.BLANK),
        ("😷", validators.NO_TEXT),
        (", ; ,", validators.NO_TEXT),
        (", ".join(["a"] * 51), validators.TOO_MANY),
        ("asthma, " + "x" * 201, validators.ITEM_TOO_LONG),
        ("asthma, dia\x00betes", validators.INVALID_CHARACTERS),
    ],
)
def test_lists_that_cannot_be_used_are_refused(typed: str, reason: str) -> None:
    with pytest.raises(AnswerError) as refused:
        parse_list(typed)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("  Atrás! ", "atras"), ("¿AYUDA?", "ayuda"), ("Delete  my\tdata.", "delete my data")],
)
def test_normalize_folds_case_accents_spaces_and_outer_punctuation(
    typed: str, expected: str
) -> None:
    assert normalize(typed) == expected


def test_refusal_reasons_never_carry_the_answer() -> None:
    with pytest.raises(AnswerError) as refused:
        parse_name("Secret Patient Name" * 10)
    assert "Secret" not in str(refused.value)


@given(st.text(max_size=400))
def test_parsers_only_ever_refuse_with_an_answer_error(typed: str) -> None:
    for parse in (parse_name, parse_address, parse_list, parse_date):
        try:
            parse(typed)
        except AnswerError:
            pass


@given(st.text(max_size=400))
def test_accepted_answers_always_fit_the_archived_record(typed: str) -> None:
    fields: dict[str, object] = {}
    for name, parse in [("name", parse_name), ("address", parse_address)]:
        try:
            fields[name] = parse(typed)
        except AnswerError:
            pass
    try:
        fields["medical_conditions"] = tuple(parse_list(typed))
    except AnswerError:
        pass
    validate(make_record(**fields))
