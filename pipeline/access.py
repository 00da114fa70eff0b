"""Who may do what on a shared dashboard: users with password hashes and roles in a JSON file,
the server's access settings, and `python -m pipeline users add NAME` to fill the file.

Viewers explore; editors also correct labels and start or cancel retraining. Pure: no web code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from pipeline.errors import PipelineError

VIEWER, EDITOR = "viewer", "editor"
ROLES = (VIEWER, EDITOR)
CONFIG_KEY = "XRAE_ACCESS"  # where the server's Settings live in app.server.config
AUTH_FILE_ENV, USER_HEADER_ENV = "XRAE_AUTH_FILE", "XRAE_TRUST_USER_HEADER"
READ_ONLY_ENV, MAX_JOBS_ENV = "XRAE_READ_ONLY", "XRAE_MAX_JOBS"
DEFAULT_MAX_JOBS = 1


@dataclass(frozen=True)
class Settings:
    """How one server decides who may change labels and start jobs."""

    auth_file: Path | None = None  # users, roles and password hashes (basic auth)
    trust_user_header: str | None = None  # a reverse proxy names the user in this header
    read_only: bool = False  # nothing can be changed, whoever asks
    max_jobs: int = DEFAULT_MAX_JOBS  # retraining jobs at once on this server

    @property
    def authenticates(self) -> bool:
        return bool(self.auth_file or self.trust_user_header)


@dataclass(frozen=True)
class User:
    name: str
    role: str


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def check_max_jobs(value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise PipelineError(f"the number of retraining jobs at once must be 1 or more, "
                            f"not {value!r} (--max-jobs / ${MAX_JOBS_ENV})")
    return number


def settings_from_env(environ=None, *, auth_file=None, trust_user_header=None,
                      read_only: bool | None = None, max_jobs=None) -> Settings:
    """Settings from the arguments given, else the environment (so gunicorn workers agree).

    The users file is read here, so a missing or malformed one stops the server at start."""
    env = os.environ if environ is None else environ
    auth_file = auth_file or env.get(AUTH_FILE_ENV) or None
    if auth_file:
        auth_file = Path(auth_file).expanduser().resolve()
        load_users(auth_file)
    header = (trust_user_header or env.get(USER_HEADER_ENV) or "").strip() or None
    return Settings(
        auth_file=auth_file, trust_user_header=header,
        read_only=_flag(env.get(READ_ONLY_ENV)) if read_only is None else bool(read_only),
        max_jobs=check_max_jobs(max_jobs if max_jobs is not None else
                                env.get(MAX_JOBS_ENV) or DEFAULT_MAX_JOBS))


# ---------------------------------------------------------------- the users file


def load_users(path) -> dict[str, dict]:
    """{name: {"role", "password"}} from the users file; re-read when the file changes."""
    path = Path(path)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as err:
        raise PipelineError(f"users file {path}: {err.strerror or err}") from err
    return _read_users(str(path), stamp)


@lru_cache(maxsize=4)
def _read_users(path: str, _stamp: int) -> dict[str, dict]:
    try:
        users = json.loads(Path(path).read_text()).get("users")
    except (OSError, ValueError, AttributeError) as err:
        raise PipelineError(f"users file {path} is not a users file ({err}); make one with "
                            "`python -m pipeline users add NAME --file FILE`") from err
    if not isinstance(users, dict):
        raise PipelineError(f"users file {path} has no 'users' object")
    for name, user in users.items():
        if not isinstance(user, dict) or user.get("role") not in ROLES or \
                not isinstance(user.get("password"), str):
            raise PipelineError(f"users file {path}: user {name!r} needs a role "
                                f"({' or '.join(ROLES)}) and a password hash")
    return users


def check_user_name(name) -> str:
    name = str(name or "").strip()
    if not name or len(name) > 100 or ":" in name or not name.isprintable():
        raise PipelineError(f"invalid user name {name!r}: 1 to 100 printable characters, no ':'")
    return name


def add_user(path, name: str, password: str, role: str = VIEWER) -> None:
    """Add a user to the users file (made when absent), or replace their role and password.

    The file is replaced whole (temporary file, then rename), so a reader never sees half of it.
    """
    path, name = Path(path), check_user_name(name)
    if role not in ROLES:
        raise PipelineError(f"unknown role {role!r}: use {' or '.join(ROLES)}")
    if not password:
        raise PipelineError(f"user {name} needs a password")
    users = dict(load_users(path)) if path.exists() else {}
    users[name] = {"role": role, "password": generate_password_hash(password)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:  # mkstemp: readable by its owner only
            json.dump({"users": users}, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- who is asking

_PEPPER = secrets.token_bytes(32)  # keys the memo of checked passwords to this process
_checked: dict[tuple[str, str], bytes] = {}


def _password_ok(name: str, stored: str, password: str) -> bool:
    """check_password_hash, remembered per user and hash: the browser re-sends the password
    with every request, and a scrypt check takes a fifth of a second."""
    digest = hmac.new(_PEPPER, password.encode(), hashlib.sha256).digest()
    if hmac.compare_digest(_checked.get((name, stored), b""), digest):
        return True
    if not check_password_hash(stored, password):
        return False
    if len(_checked) > 1000:
        _checked.clear()
    _checked[(name, stored)] = digest
    return True


def identify(settings: Settings, username: str | None = None, password: str | None = None,
             header_value: str | None = None) -> User | None:
    """The user a request comes from, with their role; None when it proves no one.

    Behind a trusted proxy the header names the user (the proxy checked them): their role is
    the users file's, viewer for a name the file lacks, editor when there is no file. Otherwise
    basic auth's name and password are checked against the file's hash.
    """
    users = load_users(settings.auth_file) if settings.auth_file else {}
    if settings.trust_user_header:
        name = (header_value or "").strip()
        if not name:
            return None
        role = users.get(name, {}).get("role", VIEWER) if settings.auth_file else EDITOR
        return User(name[:100], role)
    user = users.get(username or "")
    if user is None or not password or not _password_ok(username, user["password"], password):
        return None
    return User(username, user["role"])


def refusal(settings: Settings, user: User | None, action: str) -> str | None:
    """Why `user` may not `action` (e.g. 'correct labels') on this server; None if they may."""
    if settings.read_only:
        return f"This dashboard is read-only: nobody can {action} here."
    if not settings.authenticates:
        return None
    if user is None:
        return f"Sign in to {action}."
    if user.role != EDITOR:
        return f"{user.name} is a {user.role}: only editors can {action}."
    return None
