"""The database: the schema (``schema``, SQLAlchemy Core on SQLite or PostgreSQL), the store of flags,
allocation versions, arm stats, event batches and keys (``store``, its parts in ``meta``, ``keys``,
``flags``, ``stats``, ``events``, ``recompute`` and ``rows``), the audit log (``audit``) and the SDK
reports (``reports``). Blocking calls, one transaction per operation; nothing here knows HTTP.
"""
