"""Celery tasks that decide and credit rewards, in a prefork pool.

The client is created when the worker imports this module, in the worker's main process, before the
prefork pool forks its children. Each child re-initialises the client after the fork (threads,
locks, buffer), keeps polling the configuration and sends its own counts. Billiard's children leave
through ``os._exit``, which skips ``atexit``: the ``worker_process_shutdown`` handler below flushes
what a child still holds when it stops, so a warm shutdown loses nothing::

    BANDITFLAGS_URL=http://127.0.0.1:8080 BANDITFLAGS_SDK_KEY=... \\
        celery --workdir examples -A celery_worker worker --pool prefork --concurrency 2
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown

import banditflags

FLAG = os.environ.get("EXAMPLE_FLAG", "checkout-button")
BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("celery_worker", broker=BROKER, backend=os.environ.get("CELERY_RESULT_BACKEND", BROKER))
app.conf.task_default_queue = os.environ.get("EXAMPLE_QUEUE", "banditflags-example")
app.conf.worker_prefetch_multiplier = 1  # spread short tasks over the children

client = banditflags.Client(
    os.environ.get("BANDITFLAGS_URL", "http://127.0.0.1:8080"),
    sdk_key=os.environ["BANDITFLAGS_SDK_KEY"].split(",")[0],
    refresh_interval=float(os.environ.get("BANDITFLAGS_REFRESH_INTERVAL", "5")),
    flush_interval=float(os.environ.get("BANDITFLAGS_FLUSH_INTERVAL", "2")),
)
client.wait_until_ready(timeout=float(os.environ.get("BANDITFLAGS_STARTUP_TIMEOUT", "0.5")))  # bounded


@app.task(name="banditflags_example.checkout")
def checkout(user_id: str) -> dict[str, Any]:
    """Decide the checkout button for one user (say, while rendering an e-mail)."""
    d = client.decide(FLAG, user_id, default="blue")
    return {
        "variant": d.variant,
        "reason": d.reason.value,
        "version": d.version,
        "token": d.token,
        "pid": os.getpid(),
    }


@app.task(name="banditflags_example.convert")
def convert(token: str, reward: float = 1.0) -> bool:
    """Credit a reward to the decision ``token`` names (made in any process)."""
    return client.track(token, reward=reward)


@worker_process_shutdown.connect
def _flush_on_exit(**_: Any) -> None:
    client.close(timeout=5.0)  # bounded; sends what this child still holds
