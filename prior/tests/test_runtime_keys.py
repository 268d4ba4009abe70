import pytest

from common.config import ConfigError, from_dict
from prior.settings import Config


def test_compile_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="does not compile"):
        from_dict(Config, {"runtime": {"compile": True}})
    assert from_dict(Config, {"runtime": {"amp": "bf16"}}).runtime.amp == "bf16"  # honoured by the engine
