"""The background-callback manager (Celery with Redis when REDIS_URL is set, diskcache
otherwise), and what every job panel's callbacks share: one start button, one cancel button, a
progress bar shown while the job runs, and coloured status lines.

Background jobs run in forked worker processes, so nothing here touches CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from dash import Input, Output, html

SHOWN, HIDDEN = {"display": "block"}, {"display": "none"}


def job_options(start: str, cancel: str, progress: str, box: str) -> dict:
    """The keyword arguments of a job's background callback: while it runs, its start button
    is disabled, its cancel button enabled and its progress bar (`progress` inside `box`)
    shown; Dash cancels it on the cancel button."""
    return {
        "background": True,
        "progress": [Output(progress, "value"), Output(progress, "label")],
        "progress_default": [0, ""],
        "running": [(Output(start, "disabled"), True, False),
                    (Output(cancel, "disabled"), False, True),
                    (Output(box, "style"), SHOWN, HIDDEN)],
        "cancel": [Input(cancel, "n_clicks")],
        "prevent_initial_call": True,
    }


def progress_reporter(set_progress) -> Callable[[str, float], None]:
    """on_progress(stage, fraction) for a job, drawn as "stage NN%" on its progress bar."""
    def report(stage: str, fraction: float) -> None:
        set_progress((round(100 * fraction), f"{stage} {100 * fraction:.0f}%"))
    return report


def alert(text: str, colour: str = "danger") -> html.Span:
    """A status line: red for a failure, "warning" for a cancel, "success" when done."""
    return html.Span(text, className=f"text-{colour}")


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
