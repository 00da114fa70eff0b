"""The background-callback manager: Celery with Redis when REDIS_URL is set, diskcache otherwise.

Background jobs run in forked worker processes, so nothing here touches CUDA.
"""

from __future__ import annotations

import os
from pathlib import Path


def make_background_manager(cache_dir: Path):
    """Return (manager, celery_app); celery_app is None unless REDIS_URL is set."""
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        from celery import Celery
        from dash import CeleryManager

        celery_app = Celery("xrae", broker=redis_url, backend=redis_url)
        celery_app.conf.update(
            # A retraining takes minutes: a worker takes one job at a time rather than holding
            # queued ones that an idle worker on another machine could start.
            worker_prefetch_multiplier=1,
            broker_connection_retry_on_startup=True,  # a worker may start before Redis is up
        )
        return CeleryManager(celery_app), celery_app

    import diskcache
    from dash import DiskcacheManager

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return DiskcacheManager(diskcache.Cache(str(cache_dir))), None
