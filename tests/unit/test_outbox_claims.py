"""Which queued replies a claim leases: in order, never past another holder's lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from repositories.conversations.model import claim_replies

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=180)


def _item(key: str, until: datetime | None = None, by: str | None = None) -> dict:
    return {"key": key, "claimed_until": until, "claimed_by": by, "attempts": 0}


def test_free_replies_are_all_leased_to_the_holder_in_order():
    outbox = [_item("a"), _item("b")]
    leased = claim_replies(outbox, NOW, LEASE, "me")
    assert [item["key"] for item in leased.items] == ["a", "b"]
    assert all(item["claimed_by"] == "me" for item in outbox)
    assert leased.leased_until == NOW + LEASE
    assert (leased.waiting, leased.blocked_until, leased.skipped) == (0, None, ())


def test_replies_leased_to_the_same_holder_are_passed_over_and_named():
    outbox = [_item("a", NOW + LEASE, "me"), _item("b")]
    leased = claim_replies(outbox, NOW, LEASE, "me")
    assert [item["key"] for item in leased.items] == ["b"]
    assert leased.skipped == ("a",) and leased.waiting == 0


def test_a_reply_leased_by_another_holder_stops_the_claim_and_says_until_when():
    until = NOW + timedelta(seconds=30)
    outbox = [_item("a"), _item("b", until, "other"), _item("c")]
    leased = claim_replies(outbox, NOW, LEASE, "me")
    assert [item["key"] for item in leased.items] == ["a"]
    assert leased.waiting == 2 and leased.blocked_until == until
    assert outbox[2]["claimed_until"] is None  # never leased past the other holder's reply


def test_without_a_holder_even_this_process_s_own_lease_is_waited_for():
    until = NOW + timedelta(seconds=30)
    outbox = [_item("a", until, "me"), _item("b")]
    leased = claim_replies(outbox, NOW, LEASE)
    assert leased.items == [] and leased.waiting == 2 and leased.blocked_until == until


def test_an_expired_lease_is_taken_over():
    outbox = [_item("a", NOW - timedelta(seconds=1), "dead"), _item("b")]
    leased = claim_replies(outbox, NOW, LEASE, "me")
    assert [item["key"] for item in leased.items] == ["a", "b"]
    assert outbox[0]["claimed_by"] == "me"
