from datetime import UTC, date, datetime

from service.domain.passwords import export_password, today_utc


def test_the_password_is_stable_for_a_day_and_changes_the_next():
    first = export_password("master-secret-value", date(2026, 11, 25))
    again = export_password("master-secret-value", date(2026, 11, 25))
    tomorrow = export_password("master-secret-value", date(2026, 11, 26))
    assert first.password == again.password
    assert first.password != tomorrow.password


def test_the_password_depends_on_the_master_secret():
    day = date(2026, 11, 25)
    assert export_password("one-secret-value", day) != export_password("another-secret", day)


def test_the_password_is_long_and_has_no_ambiguous_characters():
    for day in range(1, 29):
        password = export_password("master-secret-value", date(2026, 2, day)).password
        assert len(password) >= 20
        assert not set(password) & set("0O1lI")


def test_the_password_is_valid_until_the_next_utc_midnight():
    daily = export_password("master-secret-value", date(2026, 12, 31))
    assert daily.valid_until == datetime(2027, 1, 1, tzinfo=UTC)


def test_today_is_the_utc_date_even_late_in_a_western_evening():
    from datetime import timedelta, timezone

    evening_in_new_york = datetime(2026, 11, 25, 21, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert today_utc(evening_in_new_york) == date(2026, 11, 26)
