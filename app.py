"""X-ray Attribute Explorer, the Dash app: `python app.py` serves http://127.0.0.1:8050 (building
the demo run first when the data directory holds none); `gunicorn -w 2 app:server` serves the runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

import dash
import flask
from dash.exceptions import PreventUpdate

import callbacks  # noqa: F401  (registers every panel's callbacks with the apps made here)
from callbacks.background import make_background_manager
from callbacks.common import refusal, signed_in_name
from callbacks.control import first_state
from callbacks.corrections import EDIT
from callbacks.retrain import JOBS
from callbacks.views import first_pictures
from components import ids
from components.layout import create_layout
from pipeline import access
from pipeline.cli import first_paragraph
from pipeline.errors import PipelineError
from pipeline.store import DATA_DIR_ENV, resolve_data_dir, scan_runs

log = logging.getLogger("xrae.app")


def page() -> dash.html.Div:
    """The page for the person asking. Every component is in it from the start (Dash checks
    each callback's ids against it); the correction form and the retraining buttons are drawn
    for what this person may do (the server checks again on every request); the run list and
    the chosen run's options come filled in (callbacks.control.first_state), and a large
    run's pictures with them, to show before plotly.js has loaded (first_pictures)."""
    layout = create_layout(author=signed_in_name(), edit_locked=refusal(EDIT),
                           jobs_locked=refusal(JOBS))
    for component_id, props in first_state().items():
        for name, value in props.items():
            setattr(layout[component_id], name, value)
    try:
        pictures = first_pictures(layout)
    except (PipelineError, OSError, ValueError, PreventUpdate) as err:  # the page comes
        # without them; the views' own draw will say more
        log.warning("no first pictures for the page: %r", err)
        pictures = {}
    for space, picture in pictures.items():
        layout[ids.VIEW_PREVIEWS[space]].src = picture
    return layout


def create_app(data_dir=None, *, auth_file=None, trust_user_header=None, read_only=None,
               max_jobs=None) -> dash.Dash:
    """The dashboard on the runs in data_dir (default: $XRAE_DATA_DIR, else ./data).

    Who may change labels and start jobs: the arguments, else $XRAE_AUTH_FILE,
    $XRAE_TRUST_USER_HEADER, $XRAE_READ_ONLY and $XRAE_MAX_JOBS (so gunicorn workers agree).
    """
    settings = access.settings_from_env(auth_file=auth_file, trust_user_header=trust_user_header,
                                        read_only=read_only, max_jobs=max_jobs)
    if data_dir is not None:
        os.environ[DATA_DIR_ENV] = str(resolve_data_dir(data_dir))  # workers and callbacks agree
    manager, celery_app = make_background_manager(resolve_data_dir() / "cache")
    app = dash.Dash(__name__, title="X-ray Attribute Explorer",
                    background_callback_manager=manager)
    app.layout = page
    app.celery_app = celery_app
    app.server.config[access.CONFIG_KEY] = settings
    if settings.authenticates:
        app.server.before_request(lambda: sign_in(settings))
    warm_up_pictures()
    return app


def warm_up_pictures() -> None:
    """When a run is large enough to be drawn as pictures, compile their drawing code now, in
    the background, rather than during the first user's first draw."""
    from components import raster

    if any(raster.is_raster(len(run)) for run in scan_runs()[0]):
        threading.Thread(target=raster.warm_up, name="xrae-warm-up", daemon=True).start()


def sign_in(settings: access.Settings) -> flask.Response | None:
    """Before every request: find who sends it (basic auth checked against the users file, or
    the name a trusted proxy put in its header); nobody proven gets 401 and nothing else."""
    header = settings.trust_user_header
    auth = flask.request.authorization
    try:
        user = access.identify(settings, auth.username if auth else None,
                               auth.password if auth else None,
                               flask.request.headers.get(header) if header else None)
    except PipelineError as err:  # the users file went missing or bad while serving
        log.error("%s", err)
        return flask.Response(f"Sign-in is unavailable: {err}\n", 503)
    if user is None:
        if header:
            return flask.Response(f"This dashboard is reached through its proxy, which names "
                                  f"the user in the {header} header.\n", 401)
        return flask.Response("Sign in to use the X-ray Attribute Explorer.\n", 401,
                              {"WWW-Authenticate": 'Basic realm="X-ray Attribute Explorer"'})
    flask.g.xrae_user = user
    return None


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
    add_access_options(parser)
    args = parser.parse_args(argv)
    try:
        data_dir = resolve_data_dir(args.data_dir)
        os.environ[DATA_DIR_ENV] = str(data_dir)
        ensure_demo(data_dir)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    create_app(data_dir, **access_options(args)).run(host=args.host, port=args.port,
                                                      debug=args.debug)
    return 0


def _checked(check):
    """An argparse type from a check that raises PipelineError: its message, exit status 2."""
    def parse(text: str):
        try:
            return check(text)
        except PipelineError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


def _users_file(text: str) -> str:
    access.load_users(text)
    return text


def add_access_options(parser: argparse.ArgumentParser) -> None:
    """Who may change labels and start jobs (read by create_app; see README, lab intranet)."""
    parser.add_argument("--auth", metavar="FILE", default=None, type=_checked(_users_file),
                        help="sign in with the users and password hashes in FILE (made by "
                             "`python -m pipeline users add NAME --role editor --file FILE`); "
                             f"default ${access.AUTH_FILE_ENV}")
    parser.add_argument("--trust-user-header", metavar="HEADER", default=None,
                        help="take the user name a reverse proxy puts in HEADER (e.g. "
                             f"X-Forwarded-User); default ${access.USER_HEADER_ENV}")
    parser.add_argument("--read-only", action="store_true",
                        help=f"nobody can change labels or start jobs (or ${access.READ_ONLY_ENV}"
                             "=1)")
    parser.add_argument("--max-jobs", type=_checked(access.check_max_jobs), default=None,
                        metavar="N",
                        help="retraining jobs at once on this server (default "
                             f"${access.MAX_JOBS_ENV}, else {access.DEFAULT_MAX_JOBS})")


def access_options(args: argparse.Namespace) -> dict:
    return {"auth_file": args.auth, "trust_user_header": args.trust_user_header,
            "read_only": args.read_only or None, "max_jobs": args.max_jobs}


if __name__ == "__main__":
    sys.exit(main())
