"""Who may register what: the cage's authorized-keys file. Pure.

The file is TOML; each table is named by a client's CURVE public key (Z85,
as ``zdse-ctl keygen`` prints it) and says which unique names it may
register and which extra addresses it may listen on::

    ["Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"]
    names = ["vSphere.*"]                  # patterns, as in routing
    addresses = ["vSphere.node.list", "vSphere.#"]

A name is allowed if one of ``names`` matches it (``*`` one word, ``#`` any).
An address without wildcard words is allowed if one of ``addresses``
matches it; an address with wildcard words must be listed as it is, since a
pattern like ``vSphere.*`` does not cover ``vSphere.#``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from zdse.errors import ConfigError
from zdse.wire import codec
from zdse.wire.routes import pattern_matches, split_words

__all__ = ["Authorized", "Grant"]

#: Length of a Z85-encoded CURVE public key.
Z85_KEY_LENGTH = 40


@dataclass(frozen=True, slots=True)
class Grant:
    """What one key may register."""

    names: tuple[str, ...]
    addresses: tuple[str, ...]


class Authorized:
    """The authorized keys and their grants."""

    def __init__(self, grants: dict[str, Grant]) -> None:
        self.grants = grants

    @classmethod
    def parse(cls, text: str, source: str = "authorized file") -> Authorized:
        """Read the TOML form.

        Raises:
            ConfigError: naming the key or field that is wrong.
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
        grants: dict[str, Grant] = {}
        for key, table in data.items():
            if len(key) != Z85_KEY_LENGTH:
                raise ConfigError(
                    f"{source}: {key!r} is not a {Z85_KEY_LENGTH}-character Z85 public key"
                )
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: [{key!r}] must be a table with names = [...]")
            unknown = set(table) - {"names", "addresses"}
            if unknown:
                raise ConfigError(f"{source}: [{key!r}] has unknown fields {sorted(unknown)}")
            names = _patterns(table.get("names", []), f"{source}: [{key!r}].names")
            addresses = _patterns(table.get("addresses", []), f"{source}: [{key!r}].addresses")
            grants[key] = Grant(names, addresses)
        return cls(grants)

    def knows(self, public_key: str) -> bool:
        """Whether a key may connect at all."""
        return public_key in self.grants

    def check(self, public_key: str, register: codec.Register) -> str | None:
        """Return why ``register`` is not allowed for this key, or None if it is."""
        grant = self.grants.get(public_key)
        if grant is None:
            return f"key {public_key[:8]}... is not authorized"
        if not any(pattern_matches(p, register.name) for p in grant.names):
            return f"key {public_key[:8]}... may not register the name {register.name!r}"
        for address in register.addresses:
            if any(w in ("*", "#") for w in split_words(address)):
                allowed = address in grant.addresses
            else:
                allowed = any(pattern_matches(p, address) for p in grant.addresses)
            if not allowed:
                return f"key {public_key[:8]}... may not listen on {address!r}"
        return None


def _patterns(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    for pattern in value:
        try:
            codec.validate_pattern(pattern)
        except Exception as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return tuple(value)
