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

from zdse.errors import ConfigError

__all__ = ["CurveClient", "CurveServer", "generate", "load_public", "load_secret"]


def generate(prefix: str) -> tuple[Path, Path]:
    """Write a key pair as ``PREFIX.key`` and ``PREFIX.key_secret``; return both paths."""
    path = Path(prefix)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), path.name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


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
