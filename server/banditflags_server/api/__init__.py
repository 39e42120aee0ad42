"""The HTTP API for machines: the wire protocol v1 (docs/protocol.md).

One module per resource (``config``, ``events``, ``flags``, ``health``, ``metrics``, ``stream``), each
a list of declarative ``routes`` with thin handlers: every route is an ``operations.ApiRoute`` carrying
its ``Operation`` (key, parameters, body, answer, statuses), from which ``openapi`` builds the OpenAPI
3.1 document served at ``/openapi.json``. Request bodies are typed schemas (``schemas``, msgspec Structs:
also the source of the JSON Schema) decoded from the request bytes; ``response_schemas`` describes the
answers; ``validation`` adds the checks a schema cannot express and builds the records of
:mod:`banditflags_server.records`, and ``schema_errors`` names the bad field in every error. ``auth``
checks the bearer keys (``throttle`` refuses addresses that keep guessing) and ``context`` holds what
handlers share. Handlers call down into ``service``, ``engine`` and ``storage``, never into the console.
"""
