"""The SDK's version, reported to the server as ``banditflags-python/<version>``."""

__version__ = "0.1.0"
