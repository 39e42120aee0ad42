"""What the API and the console share: creating, changing and deleting flags with their audit entries
(``flags``), the recompute cycle that feeds stored stats to the engine and writes the new tables
(``recompute``), and the server's Prometheus metrics (``metrics``). Uses ``engine`` and ``storage``;
knows nothing of HTTP.
"""
