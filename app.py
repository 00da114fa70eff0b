"""X-ray Attribute Explorer, the Dash app: `python app.py` serves http://127.0.0.1:8050 (building
the demo run first when the data directory holds none); `gunicorn -w 2 app:server` serves the runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import dash

from callbacks.background import make_background_manager
from components.layout import create_layout
from pipeline.cli import first_paragraph
from pipeline.errors import PipelineError
from pipeline.store import DATA_DIR_ENV, resolve_data_dir, scan_runs

log = logging.getLogger("xrae.app")

CALLBACK_MODULES = ("callbacks.control", "callbacks.views", "callbacks.selection",
                    "callbacks.detail", "callbacks.science", "callbacks.audit",
                    "callbacks.corrections", "callbacks.retrain")
_registered: tuple[list, dict] | None = None


def register_callbacks() -> list[str]:
    """Import the callback modules (those present) so their @dash.callback's register.

    Dash hands the globally registered callbacks to the first app that starts and forgets them;
    a copy is kept so that every app made in this process (tests make several) gets them all.
    """
    global _registered
    from dash import _callback

    if _registered is not None:
        _callback.GLOBAL_CALLBACK_LIST[:] = _registered[0]
        _callback.GLOBAL_CALLBACK_MAP.update(_registered[1])
        return []
    skipped = []
    for name in CALLBACK_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            skipped.append(name)
    if skipped:
        log.info("callback modules not present, skipped: %s", ", ".join(skipped))
    _registered = (list(_callback.GLOBAL_CALLBACK_LIST), dict(_callback.GLOBAL_CALLBACK_MAP))
    return skipped


def create_app(data_dir=None) -> dash.Dash:
    """The dashboard on the runs in data_dir (default: $XRAE_DATA_DIR, else ./data)."""
    if data_dir is not None:
        os.environ[DATA_DIR_ENV] = str(resolve_data_dir(data_dir))  # workers and callbacks agree
    manager, celery_app = make_background_manager(resolve_data_dir() / "cache")
    register_callbacks()
    app = dash.Dash(
        __name__, title="X-ray Attribute Explorer", background_callback_manager=manager,
        # Other panels fill their slots with components made by callbacks, unknown at start.
        suppress_callback_exceptions=True,
    )
    app.layout = create_layout
    app.celery_app = celery_app
    return app


def __getattr__(name: str):
    """`app:server`, `app:app` and `app:celery_app` are made on first use, not on import, so
    importing this module (tests, tools) never touches a data directory."""
    if name not in ("app", "server", "celery_app"):
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    globals()["app"] = made = create_app()
    globals()["server"], globals()["celery_app"] = made.server, made.celery_app
    return globals()[name]


def ensure_demo(data_dir) -> None:
    """Build the demo run, with progress in the terminal, when the data directory has no run.

    Broken runs are named here (the dashboard shows them disabled); they count as runs, so a
    data directory of the user's own is never filled with a demo because one run broke.
    """
    runs, broken = scan_runs(data_dir)
    for path, reason in broken:
        print(f"warning: broken run {path.name}: {reason}", file=sys.stderr)
    if runs or broken:
        return
    try:
        from pipeline.demo import run_demo
    except ModuleNotFoundError:
        print(f"no run in {data_dir} and no demo builder (pipeline.demo) installed; "
              "the dashboard will say how to make one", file=sys.stderr)
        return
    print(f"no run in {data_dir}: building the demo run first (once)…", file=sys.stderr)
    run_demo(data_dir, progress=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python app.py", description=first_paragraph(__doc__))
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--data-dir", default=None,
                        help="where datasets and runs live (default: $XRAE_DATA_DIR or ./data)")
    parser.add_argument("--debug", action="store_true", help="Dash dev tools and reloading")
    args = parser.parse_args(argv)
    try:
        data_dir = resolve_data_dir(args.data_dir)
        os.environ[DATA_DIR_ENV] = str(data_dir)
        ensure_demo(data_dir)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    create_app(data_dir).run(host=args.host, port=args.port, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
