"""Reading the settings: on-by-default switches."""

from __future__ import annotations

import pytest

from dlops.config import _switched_off

NAME = "DLOPS_ADAPTIVE_BATCHING"


@pytest.mark.parametrize("value", ["", "1", "true", "Yes", " on "])
def test_a_switch_stays_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(NAME, value)
    assert not _switched_off(NAME)


@pytest.mark.parametrize("value", ["0", "false", "NO", "off"])
def test_a_switch_is_turned_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(NAME, value)
    assert _switched_off(NAME)


def test_a_switch_that_is_neither_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "sometimes")
    with pytest.raises(SystemExit, match="DLOPS_ADAPTIVE_BATCHING='sometimes' is neither"):
        _switched_off(NAME)
