"""The one compiled module, banditflags._speedups (Client.track()'s fast path, sdk/banditflags/_speedups.c).

Everything else about the package is in pyproject.toml; setuptools reads both. The extension needs
nothing but CPython's headers and a C compiler, and is optional: where it cannot be built, the install
goes on and the pure-Python path does the same work, slower (docs/performance.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "banditflags._speedups",
            sources=["sdk/banditflags/_speedups.c"],
            optional=True,
        )
    ]
)
