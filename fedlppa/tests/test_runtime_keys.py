import pytest

from common.config import ConfigError, from_dict
from fedlppa.settings import Config


@pytest.mark.parametrize(("runtime", "message"), [({"amp": "bf16"}, "no mixed-precision path"),
                                                  ({"compile": True}, "does not compile"),
                                                  ({"device": "cuda"}, "clients run on CPU")])
def test_runtime_keys_it_cannot_honour_are_refused(runtime, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Config, {"runtime": runtime})
