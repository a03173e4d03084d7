import pytest

from rlhf_cli.registry import Registry, UnknownNameError


def _make():
    reg = Registry("dpo loss")

    @reg.register("dpo")
    def dpo():
        return "dpo!"

    @reg.register("ipo")
    def ipo():
        return "ipo!"

    return reg


def test_register_get_names_contains():
    reg = _make()
    assert reg.get("dpo")() == "dpo!"
    assert reg.get("ipo")() == "ipo!"
    assert reg.names() == ["dpo", "ipo"]
    assert "dpo" in reg and "kto" not in reg
    assert len(reg) == 2


def test_unknown_name_suggests_close_match():
    reg = _make()
    with pytest.raises(UnknownNameError) as ei:
        reg.get("dpp")
    msg = str(ei.value)
    assert msg == "unknown dpo loss 'dpp' (did you mean 'dpo'? choices: dpo, ipo)"
    assert isinstance(ei.value, KeyError)


def test_unknown_name_without_close_match():
    reg = _make()
    with pytest.raises(KeyError, match=r"unknown dpo loss 'zzzzzz' \(choices: dpo, ipo\)"):
        reg.get("zzzzzz")


def test_duplicate_registration_rejected():
    reg = _make()
    with pytest.raises(ValueError):
        reg.register("dpo")(lambda: None)
