"""``python -m banditflags_server ...``: the same CLI as the ``banditflags`` console script."""

import sys

from banditflags_server.cli import main

if __name__ == "__main__":
    sys.exit(main())
