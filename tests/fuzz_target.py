"""An atheris (libFuzzer) target: garbage into the codec and the pure cores.

Run as ``python -m tests.fuzz_target [libFuzzer flags] [corpus dirs]``;
tests/test_fuzz.py runs it for a bounded time. The first byte of an input
picks the target, the rest is split into frames at :data:`SEP`:

- 0: ``codec.parse_header`` and ``codec.decode_body`` of a kind (also from byte 0);
- 1: ``CageCore.receive`` from a stranger or from a registered node;
- 2: ``NodeCore.receive`` (what a DEALER gets from the cage);
- 3: ``NodeCore.receive_published`` (what a SUB gets from the PUB socket).

The codec may raise :class:`~zdse.errors.ProtocolError` and nothing else;
the cores may raise nothing at all. Anything else is a crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from zdse.cage.core import CageCore
    from zdse.errors import ProtocolError
    from zdse.node.core import NodeCore
    from zdse.wire import codec
    from zdse.wire.codec import Kind

#: Separates frames inside one fuzz input.
SEP = b"\xff\xfe"
KINDS = list(Kind)
#: Inputs fed to the cores before they are reset, so state cannot grow without end.
RESET_EVERY = 10_000


def fresh_cores() -> tuple[CageCore, NodeCore]:
    """A cage with one registered node, and a node the cage welcomed."""
    cage = CageCore("fuzz", 1.0)
    cage.receive(
        [[b"member", codec.header(Kind.REGISTER), b"",
          codec.encode_one(codec.Register("member", ["shared.#"], {}))]], 0.0)
    node = NodeCore(codec.Register("node", ["shared.#"], {}), "epoch", 5.0, 0.0)
    node.start(0.0)
    node.receive([codec.header(Kind.WELCOME), b"cage", b"",
                  codec.encode_one(codec.Welcome("fuzz", 1.0))], 0.0)
    node.publish("t", [[1, 2]])
    node.subscribe("shared.x", "t", 0.0)
    return cage, node


runs = 0
cage, node = fresh_cores()


def one_input(data: bytes) -> None:
    """Feed one input to the target its first byte picks."""
    global cage, node, runs
    if not data:
        return
    runs += 1
    if runs % RESET_EVERY == 0:
        cage, node = fresh_cores()
    target, rest = data[0] % 4, data[1:]
    frames = rest.split(SEP)
    now = runs / 1000  # time moves on, so expiry and re-announces happen too
    if target == 0:
        with contextlib.suppress(ProtocolError):
            codec.parse_header(rest[:3])
        with contextlib.suppress(ProtocolError):
            codec.decode_body(KINDS[(data[0] // 4) % len(KINDS)], rest)
    elif target == 1:
        identity = b"member" if data[0] & 0x80 else b"stranger"
        cage.receive([[identity, *frames]], now)
        if data[0] & 0x40:
            cage.tick(now)
    elif target == 2:
        node.receive(frames, now)  # what it returns is dropped: each input stands alone
    else:
        node.receive_published(frames, now)


def main() -> None:
    """Hand the target to libFuzzer with the command line's flags."""
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
