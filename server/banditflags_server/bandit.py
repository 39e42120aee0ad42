"""The bandit engine's public names at the path DESIGN.md §6 gives (``banditflags_server.bandit``).

The code lives in :mod:`banditflags_server.engine` (one module per job: weights, params, pooling,
posteriors, policies, guards, estimates, stattests); this module only re-exports its public names.

Example:
    >>> import numpy as np
    >>> from banditflags_server.bandit import PolicyParams, compute_weights
    >>> params = PolicyParams.from_dict({"name": "thompson", "burn_in": 10}, {"reward": "binary"}, 2)
    >>> w = compute_weights([1000, 1000], [50, 150], [50, 150], params, np.random.default_rng(0))
    >>> [round(float(x), 2) for x in w]
    [0.01, 0.99]
"""

from banditflags_server import engine
from banditflags_server.engine import *  # noqa: F403

__all__ = engine.__all__
