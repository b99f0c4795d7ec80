"""util.env: variables set for a block are put back afterwards, also when the block raises."""
import os

import pytest

from mixer_zoo.util.env import environ


def test_a_set_variable_gets_its_value_back_and_an_unset_one_is_removed(monkeypatch):
    monkeypatch.setenv("MIXER_ZOO_TEST_SET", "before")
    monkeypatch.delenv("MIXER_ZOO_TEST_UNSET", raising=False)
    with pytest.raises(RuntimeError):
        with environ({"MIXER_ZOO_TEST_SET": "inside", "MIXER_ZOO_TEST_UNSET": "inside"}):
            assert os.environ["MIXER_ZOO_TEST_SET"] == os.environ["MIXER_ZOO_TEST_UNSET"] == "inside"
            raise RuntimeError("the block fails")
    assert os.environ["MIXER_ZOO_TEST_SET"] == "before"
    assert "MIXER_ZOO_TEST_UNSET" not in os.environ
