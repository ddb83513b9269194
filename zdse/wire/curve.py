"""CURVE key files: generate, load, and apply them to sockets.

Key files are pyzmq's certificate format (``NAME.key`` holds the public key,
``NAME.key_secret`` both), as ``zdse-ctl keygen`` writes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio
import zmq.auth
from zmq.utils.z85 import Z85CHARS

from zdse.cage.authz import Z85_KEY_LENGTH
from zdse.errors import ConfigError

__all__ = ["CurveClient", "CurveServer", "generate", "is_z85_key", "load_public", "load_secret"]

#: The suffixes of a key pair's two files.
PUBLIC_SUFFIX, SECRET_SUFFIX = ".key", ".key_secret"
#: Bytes in a file name on Linux file systems (NAME_MAX).
NAME_MAX = 255


def generate(prefix: str, force: bool = False) -> tuple[Path, Path]:
    """Write a key pair as ``PREFIX.key`` and ``PREFIX.key_secret``; return both paths.

    Args:
        prefix: a directory (made if missing) and a plain file name.
        force: replace an existing pair instead of refusing.

    Raises:
        ConfigError: the name is not a plain file name, a file of the pair
            exists (without ``force``), or the files cannot be written.
    """
    path = Path(prefix)
    problem = _name_problem(prefix, path.name)
    if problem:
        shown = prefix if len(prefix) <= 80 else prefix[:60] + "..."
        raise ConfigError(f"keygen {shown!r}: {problem}")
    public, secret = (path.with_name(path.name + suffix)
                      for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX))
    try:
        existing = [str(p) for p in (public, secret) if p.exists() or p.is_symlink()]
        if existing and not force:
            raise ConfigError(f"keygen: {' and '.join(existing)} already exist(s); "
                              "--force replaces the pair (a cage's secret key included)")
        path.parent.mkdir(parents=True, exist_ok=True)
        written = zmq.auth.create_certificates(str(path.parent), path.name)
        os.chmod(written[1], 0o600)
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) else str(path.parent)
        shown = where if len(where) <= 80 else where[:60] + "..."
        raise ConfigError(f"keygen: cannot write the pair {path.name}{PUBLIC_SUFFIX} and "
                          f"{path.name}{SECRET_SUFFIX} in {shown!r}: "
                          f"{_why(exc)}") from None
    return public, secret


def _name_problem(prefix: str, name: str) -> str:
    """Why ``name``, the last part of ``prefix``, is not a plain file name ('' if it is)."""
    if not name or prefix.endswith(("/", "/.", "/..")) or name in (".", ".."):
        return "needs a file name after the directory, e.g. keys/vsphere-boston"
    if name.startswith("."):
        return "the name would make hidden files; start it with a letter or digit"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "the name holds a control character"
    longest = len((name + SECRET_SUFFIX).encode(errors="surrogateescape"))
    if longest > NAME_MAX:
        return (f"the name is too long: with {SECRET_SUFFIX} it makes a file name of "
                f"{longest} bytes, over the {NAME_MAX} a file system takes")
    return ""


def _why(exc: OSError) -> str:
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "a part of that path is a file, not a directory"
    return exc.strerror or str(exc)


def is_z85_key(key: bytes) -> bool:
    """Whether ``key`` is a CURVE key as ZeroMQ takes it: 40 Z85 characters."""
    return len(key) == Z85_KEY_LENGTH and all(c in Z85CHARS for c in key)


def load_public(path: str) -> bytes:
    """The Z85 public key in a key file (public or secret).

    Raises:
        ConfigError: the file is missing or not a key file.
    """
    public, _ = _load(path)
    return public


def load_secret(path: str) -> tuple[bytes, bytes]:
    """The (public, secret) Z85 keys in a secret key file.

    Raises:
        ConfigError: the file is missing, not a key file, or holds no secret key.
    """
    public, secret = _load(path)
    if secret is None:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def _load(path: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}") from exc
    if public is None:
        raise ConfigError(f"{path} holds no public key")
    # ZeroMQ refuses a bad key only when a socket takes it, with EINVAL and
    # no word on which key: check both here, where the file can be named.
    for what, key in (("public-key", public), ("secret-key", secret)):
        if key is not None and not is_z85_key(key):
            raise ConfigError(f"{path}: its {what} is not a {Z85_KEY_LENGTH}-character "
                              f"Z85 key ({len(key)} characters); write a new pair with "
                              "zdse-ctl keygen")
    return public, secret


@dataclass(frozen=True, slots=True)
class CurveServer:
    """The cage's CURVE identity."""

    public: bytes
    secret: bytes

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make ``sock`` a CURVE server."""
        sock.curve_server = True
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


@dataclass(frozen=True, slots=True)
class CurveClient:
    """A node's CURVE identity and the cage's public key."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def from_files(cls, key_file: str, cage_key_file: str) -> CurveClient:
        """Load a node's secret key file and the cage's public key file.

        Raises:
            ConfigError: a file is missing or wrong.
        """
        public, secret = load_secret(key_file)
        return cls(public, secret, load_public(cage_key_file))

    def apply(self, sock: zmq.Socket[bytes] | zmq.asyncio.Socket) -> None:
        """Make ``sock`` a CURVE client of the cage."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server
