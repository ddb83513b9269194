"""Driving a cage core in tests: the frames a ROUTER hands it, and what it answered."""

from __future__ import annotations

from zdse.testing import FakeProxy, routed
from zdse.wire import codec

#: The heartbeat of the cores under test.
HB = 1.0


def frames(identity: bytes, msg: codec.MessageValue, key: str = "", flags: int = 0) -> list[bytes]:
    """What the ROUTER hands the core for one message."""
    return [identity, codec.header(msg.KIND, flags), key.encode(), codec.encode_one(msg)]


def packed(identity: bytes, msg: codec.MessageValue, key: str = "", flags: int = 0
           ) -> list[bytes]:
    """What the ROUTER hands the core for one routed message sent packed."""
    return [identity, codec.pack(codec.header(msg.KIND, flags), key.encode(),
                                 codec.encode_one(msg))]


def register(core: FakeProxy, identity: bytes, name: str, *addresses: str, now: float = 0) -> None:
    """Register a node and drop what the cage answered."""
    core.receive(frames(identity, codec.Register(name, list(addresses), {})), now)


def answers(core: FakeProxy, identity: bytes) -> list[codec.MessageValue]:
    """Decode every message the cage sent ``identity`` since the last take (and forget them)."""
    router, _ = core.take()
    out: list[codec.MessageValue] = []
    for f in router:
        if f[0] == identity:
            out += codec.decode_body(*routed(f))
    return out
