"""banditflags_server: the sync server behind the banditflags SDK.

It stores flags, ingests the SDK's pre-aggregated counts, recomputes arm weights with a bandit policy,
turns weights into a bucket table with minimal user movement and serves it over the wire protocol v1
(docs/protocol.md). Start it with ``banditflags serve`` or ``python -m banditflags_server serve``.

The packages are layers; a module imports only from its own layer or the ones below it
(tests/server/test_layers.py pins this):

========================  ==============================================================================
``cli/``                  the ``banditflags`` command: serve, demo, simulate, flags
``app.py``                the app factory: routes, error handlers, background loops
``console/``              the web console for people (pages, forms, charts, sessions, templates)
``api/``                  the HTTP API for machines (routes, request schemas, auth, the push stream)
``service/``              what the API and the console share: flag changes with their audit entries, the
                          recompute cycle and its loop, the server's metrics
``engine/``, ``storage/`` the bandit and allocation maths (pure numpy); the database (schema, store, audit)
``records``, ``errors``,  the vocabulary every layer shares: records, error types, settings
``settings``
========================  ==============================================================================
"""

__version__ = "0.1.0"
