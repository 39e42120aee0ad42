"""banditflags: feature flags with an embedded multi-armed bandit.

>>> import banditflags
>>> client = banditflags.Client("http://localhost:8000", "bf_sdk_...")   # no I/O here  # doctest: +SKIP
>>> client.variant("checkout-button", "user-42", "blue")                 # local, ~1 µs  # doctest: +SKIP
'green'
>>> client.track("checkout-button", "user-42", reward=1)                 # doctest: +SKIP
True
"""

from ._client import Client
from ._exceptions import BanditflagsError, ConfigError
from ._models import ClientStats, Decision, ErrorType, Reason
from ._notify import ConfigEvent
from ._version import __version__

__all__ = [
    "BanditflagsError",
    "Client",
    "ClientStats",
    "ConfigError",
    "ConfigEvent",
    "Decision",
    "ErrorType",
    "Reason",
    "__version__",
]
