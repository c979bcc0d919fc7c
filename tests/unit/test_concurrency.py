import pytest

from service.errors import RateLimitedError
from service.exports.slots import ExportSlots


def test_an_account_past_its_limit_is_refused_with_retry_after_while_others_get_in():
    slots = ExportSlots(per_process=3, per_account=1, retry_after=7)
    with slots.hold("north"):
        with pytest.raises(RateLimitedError, match="this account already has") as refused:
            with slots.hold("north"):
                pass
        assert refused.value.retry_after == 7
        with slots.hold("south"):
            assert slots.running == 2


def test_past_the_process_limit_every_account_is_refused():
    slots = ExportSlots(per_process=2, per_account=2)
    with slots.hold("north"), slots.hold("south"):
        with pytest.raises(RateLimitedError, match="too many exports are running"):
            with slots.hold("east"):
                pass


def test_a_slot_is_given_back_when_the_export_fails():
    slots = ExportSlots(per_process=1, per_account=1)
    with pytest.raises(RuntimeError, match="disk full"):
        with slots.hold("north"):
            raise RuntimeError("disk full")
    assert slots.running == 0
    with slots.hold("north"):
        assert slots.running == 1


def test_a_refused_export_takes_no_slot():
    slots = ExportSlots(per_process=1, per_account=1)
    with slots.hold("north"):
        for account in ("north", "south"):
            with pytest.raises(RateLimitedError):
                with slots.hold(account):
                    pass
        assert slots.running == 1
    assert slots.running == 0
    with slots.hold("south"):
        pass


@pytest.mark.parametrize(("per_process", "per_account"), [(0, 1), (1, 0)])
def test_a_limit_below_one_is_refused(per_process, per_account):
    with pytest.raises(ValueError, match="at least 1"):
        ExportSlots(per_process, per_account)
