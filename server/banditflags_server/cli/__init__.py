"""The ``banditflags`` command line: ``serve`` (the server process), ``demo`` (the server with a demo
flag and simulated users), ``simulate`` (policies against synthetic arms) and ``flags ...`` (manage flags
on a running server over HTTP). The top layer: it may use every other package.
"""

from banditflags_server.cli.main import main

__all__ = ["main"]
