"""The HTTP API for machines: the wire protocol v1 (docs/protocol.md).

One module per resource (``config``, ``events``, ``flags``, ``health``, ``metrics``, ``stream``), each
a list of declarative ``routes`` with thin handlers; request bodies are validated into the records of
:mod:`banditflags_server.records` with errors naming the field; ``auth`` checks the bearer keys and
``context`` holds what handlers share. Handlers call down into ``service``, ``engine`` and ``storage``,
never into the console.
"""
