"""Who may use the review server: password users, an API token, login rate limits and CSRF tokens.

Secrets never sit in config.yaml in plain text: users carry salted password hashes (scrypt, in the
`scrypt:N:r:p$salt$hex` layout that werkzeug also writes, so hashes made before the move off Flask still
verify; `pbkdf2:sha256:ITERATIONS$salt$hex` is read too), and the API token is read at start-up from a file
or an environment variable named in the config. Only hashlib is needed, so `--hash-password` works without
the serve extra.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ServeSettings
from ..errors import FacedeblurError

MIN_TOKEN_LENGTH = 16
# N, r, p as werkzeug's default: about 32 MiB and a fraction of a second per check. Every login attempt pays
# it, so it stays moderate and the login limiter bounds how often an attacker can make the server pay.
SCRYPT_COST = (2 ** 15, 8, 1)
_HASH_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def hash_password(password: str) -> str:
    n, r, p = SCRYPT_COST
    salt = "".join(secrets.choice(_HASH_ALPHABET) for _ in range(16))
    return f"scrypt:{n}:{r}:{p}${salt}${_scrypt_hex(password, salt, n, r, p)}"


def _scrypt_hex(password: str, salt: str, n: int, r: int, p: int) -> str:
    # maxmem a little above the 128*N*r*p bytes scrypt needs: hashlib's default cap (32 MiB) is just too small.
    return hashlib.scrypt(password.encode(), salt=salt.encode(), n=n, r=r, p=p, maxmem=132 * n * r * p,
                          dklen=64).hex()


def check_password_hash(stored: str, password: str) -> bool:
    """True when `password` matches `stored`; a malformed or unknown hash layout is simply no match."""
    method, _, rest = stored.partition("$")
    salt, _, expected = rest.partition("$")
    kind, *numbers = method.split(":")
    try:
        if kind == "scrypt":
            n, r, p = (int(x) for x in numbers) if numbers else SCRYPT_COST
            actual = _scrypt_hex(password, salt, n, r, p)
        elif kind == "pbkdf2" and numbers:
            digest, iterations = numbers[0], int(numbers[1]) if len(numbers) > 1 else 600_000
            actual = hashlib.pbkdf2_hmac(digest, password.encode(), salt.encode(), iterations).hex()
        else:
            return False
    except (ValueError, TypeError, MemoryError):
        return False   # a hand-edited hash with impossible parameters
    return hmac.compare_digest(actual.encode(), expected.encode())


# The weakest hashes accepted in serve.users: below these a leaked config.yaml gives the passwords away fast.
MIN_PBKDF2_ITERATIONS = 100_000
MIN_SCRYPT_N = 2 ** 14


def weak_hash_problem(stored: str) -> str | None:
    """Why a stored hash is too weak to accept (pbkdf2 with few iterations, scrypt with a small N), or None."""
    kind, *numbers = stored.partition("$")[0].split(":")
    try:
        if kind == "pbkdf2" and len(numbers) > 1 and int(numbers[1]) < MIN_PBKDF2_ITERATIONS:
            return f"pbkdf2 with {int(numbers[1])} iterations (at least {MIN_PBKDF2_ITERATIONS} needed)"
        if kind == "scrypt" and numbers and int(numbers[0]) < MIN_SCRYPT_N:
            return f"scrypt with N={int(numbers[0])} (at least {MIN_SCRYPT_N} needed)"
    except ValueError:
        return None   # a malformed hash never matches (check_password_hash); config.py names the layout
    return None


# Checked against when the user name is unknown, so a wrong name costs as long as a wrong password.
_UNKNOWN_USER_HASH = hash_password(secrets.token_hex(16))


@dataclass
class Credentials:
    users: dict[str, str] = field(default_factory=dict)   # name -> password hash
    token: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.users) or self.token is not None

    def check_password(self, name: str, password: str) -> bool:
        stored = self.users.get(name)
        valid = check_password_hash(stored or _UNKNOWN_USER_HASH, password)
        return stored is not None and valid

    def check_token(self, offered: str) -> bool:
        return self.token is not None and hmac.compare_digest(offered.encode(), self.token.encode())


def load_credentials(settings: ServeSettings) -> Credentials:
    """Users and the token from the `serve:` section; a token source that is set but unusable is an error."""
    if settings.token_file is not None and settings.token_env is not None:
        raise FacedeblurError("serve: set token_file or token_env, not both (one API token)")
    token = None
    if settings.token_file is not None:
        try:
            token = Path(settings.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise FacedeblurError(f"serve.token_file {settings.token_file} cannot be read "
                                  f"({getattr(exc, 'strerror', None) or exc.__class__.__name__}); create it "
                                  "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE) "
                                  "readable by the server only") from None
        where = f"serve.token_file {settings.token_file}"
    elif settings.token_env is not None:
        token = os.environ.get(settings.token_env, "").strip()
        where = f"the environment variable {settings.token_env} (serve.token_env)"
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise FacedeblurError(f"{where} holds no usable token (at least {MIN_TOKEN_LENGTH} characters); put a "
                              "long random one there, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    for user in settings.users:
        problem = weak_hash_problem(user.password_hash)
        if problem is not None:
            raise FacedeblurError(f"serve.users {user.name}: the password hash is too weak ({problem}); make a new "
                                  "one with: facedeblur serve --hash-password")
    return Credentials(users={user.name: user.password_hash for user in settings.users}, token=token)


def host_name(host_header: str) -> str:
    """'127.0.0.1:8471' -> '127.0.0.1', '[::1]:8471' -> '[::1]', 'localhost' -> 'localhost'."""
    if host_header.endswith("]") or host_header.count(":") > 1 and not host_header.startswith("["):
        return host_header
    return host_header.rsplit(":", 1)[0]


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False   # any other host name may resolve to a public address


class LoginLimiter:
    """At most `attempts` failed logins per key (client address, user name) within `window` seconds."""

    def __init__(self, attempts: int, window: float):
        self.attempts, self.window = attempts, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def _wait(self, keys: tuple[str, ...], now: float) -> float:
        """Seconds until a login may be tried again under every key; 0 when it may be tried now."""
        waits = [failures[0] + self.window - now for key in keys
                 if len(failures := self._recent(key, now)) >= self.attempts]
        return max(waits, default=0.0)

    def begin_attempt(self, *keys: str) -> tuple[float, float]:
        """(wait, attempt): a wait above 0 refuses the attempt; otherwise it is counted as failed at once, in the
        same locked step as the check, so concurrent attempts cannot all pass the check before any failure is
        recorded. `succeeded(attempt, ...)` takes it back when the password was right."""
        now = time.monotonic()
        with self._lock:
            wait = self._wait(keys, now)
            if wait <= 0:
                self._record(keys, now)
        return wait, now

    def succeeded(self, attempt: float, *keys: str) -> None:
        with self._lock:
            for key in keys:
                failures = self._failures.get(key)
                if failures is not None and attempt in failures:
                    failures.remove(attempt)

    def _record(self, keys: tuple[str, ...], now: float) -> None:
        for key in keys:
            self._recent(key, now).append(now)
        if len(self._failures) > 100_000:   # a flood of distinct keys must not grow memory forever
            self._failures = {k: v for k, v in self._failures.items() if self._recent(k, now)}


class LiveSessions:
    """The logged-in sessions, by a random id the signed cookie carries, kept in the review database.

    The cookie alone cannot be revoked: a copy of it would work as long as the signing key does. A login adds
    an id to the store and logout removes it, so a copied cookie stops working at logout; being in the
    database, logins survive a restart of the server (the signing key is kept too: `session_key`).
    """

    def __init__(self, store):
        self.store = store   # a ReviewStore (open_session, session_user, close_session)

    def open(self, user: str) -> str:
        session_id = secrets.token_urlsafe(24)
        self.store.open_session(session_id, user)
        return session_id

    def user_of(self, session_id: object) -> str | None:
        if not isinstance(session_id, str) or not session_id:
            return None
        return self.store.session_user(session_id)

    def close(self, session_id: object) -> None:
        if isinstance(session_id, str) and session_id:
            self.store.close_session(session_id)


SESSION_KEY_FILE = "review-session.key"


def session_key(state: Path) -> str:
    """The key that signs session cookies, kept in STATE/review-session.key (mode 0600) so a restart does not
    log everyone out; made on first use. A key file that others may read is refused: with it anyone could
    forge a cookie (though not a login, which must also be in the database)."""
    path = Path(state) / SESSION_KEY_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return _new_session_key(path)
    except OSError as exc:
        raise FacedeblurError(f"the session key {path} cannot be read ({exc.strerror}); remove it (a new one is "
                              "made at start, and everyone logs in again) or fix its permissions") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.geteuid():
            raise FacedeblurError(f"the session key {path} must be a file of the server's user readable by it "
                                  f"only: chmod 600 {path} (or remove it; a new one is made at start)")
        key = handle.read(256).decode("ascii", "replace").strip()
    if len(key) < 32:
        raise FacedeblurError(f"the session key {path} is too short; remove it (a new one is made at start)")
    return key


def _new_session_key(path: Path) -> str:
    """Write a new key under a temporary name with mode 0600, then link it into place: two servers starting
    at once both end up with the one key that won."""
    key = secrets.token_urlsafe(48)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return session_key(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
    return key


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, offered: str | None) -> bool:
    return bool(expected) and bool(offered) and hmac.compare_digest(str(expected).encode(), str(offered).encode())
