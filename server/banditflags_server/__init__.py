"""banditflags_server: the sync server behind the banditflags SDK.

It stores flags, ingests the SDK's pre-aggregated counts, recomputes arm weights with a bandit policy,
turns weights into a bucket table with minimal user movement and serves it over the wire protocol v1
(docs/protocol.md). Start it with ``banditflags serve`` or ``python -m banditflags_server serve``.
"""

__version__ = "0.1.0"
