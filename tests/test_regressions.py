"""Behaviour whose tests have no other home: what another library decides, checked against that library."""

from __future__ import annotations

import pytest

from sknet.models.sources import offline_mode


@pytest.mark.parametrize("value", ["1", "true", "True", "ON", "on", "yes", "0", "false", "off", ""])
def test_hf_hub_offline_is_read_as_huggingface_hub_reads_it(value, monkeypatch):
    """Both libraries' downloads stay off for exactly the values that keep huggingface_hub's off."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert offline_mode() == constants._is_true(value)
