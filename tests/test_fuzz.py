"""Fuzzing: valid frames, mutated, into the codec and the pure cores; only protocol errors out.

Hypothesis mutates real frames of every kind (flipped, cut, grown, frames
dropped or added, headers swapped); atheris (libFuzzer, coverage-guided)
runs tests/fuzz_target.py for a bounded time from a corpus of the same
valid frames. ``ZDSE_FUZZ_SECONDS`` runs atheris longer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import ROOT, require
from tests.wireframes import DEALER_FRAMES, NODE_FRAMES, PUB_FRAMES
from zdse.cage.core import CageCore
from zdse.errors import MessageTooLarge, ProtocolError
from zdse.node.core import NodeCore
from zdse.wire import codec
from zdse.wire.codec import Kind
from zdse.wire.limits import MAX_MESSAGE_BYTES


@st.composite
def mutated(draw: st.DrawFn, templates: list[list[bytes]]) -> list[bytes]:
    """A valid frame list of ``templates``, mutated a few times, or random frames."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.lists(st.binary(max_size=64), max_size=6))
    frames = list(draw(st.sampled_from(templates)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "cut", "grow", "drop", "add", "header", "swap"]))
        i = draw(st.integers(0, max(0, len(frames) - 1)))
        if not frames:
            frames = [b""]
        frame = frames[i]
        if op == "flip" and frame:
            at = draw(st.integers(0, len(frame) - 1))
            bit = 1 << draw(st.integers(0, 7))
            frames[i] = frame[:at] + bytes([frame[at] ^ bit]) + frame[at + 1:]
        elif op == "cut":
            frames[i] = frame[: draw(st.integers(0, len(frame)))]
        elif op == "grow":
            frames[i] = frame + draw(st.binary(min_size=1, max_size=16))
        elif op == "drop":
            del frames[i]
        elif op == "add":
            frames.insert(i, draw(st.binary(max_size=16)))
        elif op == "header":
            frames[i] = bytes([1, draw(st.sampled_from([*b"RWHBQPMSUNDXFEJL", 0, 255])),
                               draw(st.integers(0, 255))])
        elif op == "swap":
            other = draw(st.sampled_from(templates))
            frames[i] = other[min(i, len(other) - 1)]
    return frames


@settings(max_examples=2000)
@given(mutated(NODE_FRAMES))
def test_the_cage_counts_each_frame_of_a_stranger_exactly_once(frames: list[bytes]) -> None:
    """Any frames from an unknown sender add exactly one to one counter, and never raise."""
    core = CageCore("e1", 1.0)
    counters = ("bad_frames", "not_registered", "too_large", "registered")
    core.receive([[b"stranger", *frames]], 0.0)
    core.tick(0.1)
    assert sum(core.stats[c] for c in counters) == 1, dict(core.stats)


@settings(max_examples=500)
@given(st.lists(mutated(NODE_FRAMES), min_size=1, max_size=8))
def test_the_cage_never_raises_on_garbage_from_a_registered_node(
    batch: list[list[bytes]],
) -> None:
    """Mutated frames from a registered node are routed, answered or counted; never raised."""
    core = CageCore("e1", 1.0)
    for who, name in ((b"A", "svc.a"), (b"B", "svc.b")):
        core.receive([[who, codec.header(Kind.REGISTER), b"",
                       codec.encode_one(codec.Register(name, ["shared"], {}))]], 0.0)
    for i, frames in enumerate(batch):
        core.receive([[b"A", *frames]], i / 10)
        core.tick(i / 10)
    assert "svc.b" in core.names


def _node() -> NodeCore:
    node = NodeCore(codec.Register("node", ["shared.#"], {}), "e1", 5.0, 0.0)
    node.start(0.0)
    node.receive(DEALER_FRAMES[0], 0.0)
    node.publish("t", [[1, 2]])
    node.subscribe("pub", "t", 0.0)
    node.receive(DEALER_FRAMES[9], 0.0)  # a snapshot: the feed is live
    return node


@settings(max_examples=500)
@given(st.lists(st.one_of(mutated(DEALER_FRAMES).map(lambda f: ("dealer", f)),
                          mutated(PUB_FRAMES).map(lambda f: ("pub", f))),
                min_size=1, max_size=8))
def test_a_node_never_raises_on_garbage_from_the_cage(
    batch: list[tuple[str, list[bytes]]],
) -> None:
    """Mutated frames on either socket of a node give events or counts, never an exception."""
    node = _node()
    for i, (socket, frames) in enumerate(batch):
        now = 0.1 * (i + 1)
        if socket == "dealer":
            node.receive(frames, now)
        else:
            node.receive_published(frames, now)
        node.tick(now)
    assert node.name == "node"


@settings(max_examples=2000)
@given(mutated([[f[0], f[2]] for f in NODE_FRAMES]))
def test_mutated_bodies_decode_or_raise_only_protocol_errors(frames: list[bytes]) -> None:
    """A mutated header and body decode to values or raise ProtocolError, nothing else."""
    head, body = ([*frames, b"", b""])[:2]
    with contextlib.suppress(ProtocolError):
        kind, _ = codec.parse_header(head)
        codec.decode_body(kind, body)


def write_corpus(folder: Path) -> None:
    """Seed atheris with every valid frame, in the target's input format."""
    from tests.fuzz_target import SEP

    folder.mkdir()
    kinds = list(Kind)
    seeds: list[bytes] = []
    for frames in NODE_FRAMES:
        kind = frames[0][1]
        # target 0: byte 0 = 4 * kind index (mod 4 == 0), then the body.
        seeds.append(bytes([(4 * kinds.index(Kind(kind))) % 256]) + frames[2])
        seeds.append(bytes([1]) + SEP.join(frames))
        seeds.append(bytes([0x81]) + SEP.join(frames))
    seeds += [bytes([2]) + SEP.join(f) for f in DEALER_FRAMES]
    seeds += [bytes([3]) + SEP.join(f) for f in PUB_FRAMES]
    for i, seed in enumerate(seeds):
        (folder / f"seed-{i}").write_bytes(seed)


#: How long atheris runs (``ZDSE_FUZZ_SECONDS`` for longer).
FUZZ_SECONDS = int(os.environ.get("ZDSE_FUZZ_SECONDS", "20"))


@pytest.mark.timeout(FUZZ_SECONDS + 120)
def test_atheris_finds_nothing_but_protocol_errors(tmp_path: Path) -> None:
    """Coverage-guided fuzzing of codec and cores for a bounded time finds no crash."""
    require("atheris (pip install atheris)", importlib.util.find_spec("atheris") is not None)
    seconds = FUZZ_SECONDS
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz_target", f"-max_total_time={seconds}",
         "-runs=5000000", f"-artifact_prefix={tmp_path}/", "-rss_limit_mb=1024",
         "-print_final_stats=1", str(corpus)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=seconds + 60, check=False,
    )
    tail = result.stderr[-4000:]
    assert result.returncode == 0, tail
    assert "Done" in result.stderr, tail
    assert not list(tmp_path.glob("crash-*")), tail


def test_data_too_large_or_unencodable_is_refused_at_publish_and_not_stored() -> None:
    """publish() raises MessageTooLarge / ProtocolError at once, and stores nothing."""
    node = _node()
    with pytest.raises(MessageTooLarge, match="exceeds"):
        node.publish("big", "x" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(ProtocolError, match="cannot encode"):
        node.publish("odd", {1, 2})
    assert "big" not in node.publications.dataindexes()
    assert "odd" not in node.publications.dataindexes()


def test_an_answer_too_large_to_send_is_counted_not_raised() -> None:
    """A subscribe whose snapshot would pass the limit (a huge id) is counted as bad input."""
    node = _node()
    node.publish("t", "x" * (MAX_MESSAGE_BYTES - 200))
    huge = codec.Subscribe("s" * 1000, "t", {}, 1.0)
    effects = node.receive(
        [codec.header(Kind.SUBSCRIBE), b"other", b"node", codec.encode_one(huge)], 1.0)
    # Nothing sent, nothing for the service: only the bad frame's log line.
    assert effects.frames == []
    assert [type(e).__name__ for e in effects.events] == ["BadFrame"]
    assert node.stats["bad_frames"] == 1
    assert "exceeds" in node.last_bad


@pytest.mark.parametrize(("frames", "why"), [
    ([b"cage", b"\x01P\x00"], "shorter than a header"),
    ([b"cage", b"\x01P\x00\x09ab"], "ends inside its key"),
    ([b"cage", b"\x01?\x00\x00\x90"], "kind"),
    ([b"cage", codec.pack(codec.header(Kind.WELCOME), b"", b"\x90")], "not sent packed"),
    ([b"\xff", codec.pack(codec.header(Kind.MESSAGE), b"k", b"\x90")], "utf-8"),
    ([b"a", b"b", b"c"], "expected 2 or 4 frames"),
])
def test_a_bad_packed_message_from_the_cage_is_one_bad_frame(frames: list[bytes],
                                                              why: str) -> None:
    """A packed frame that is short, has a bad header or a kind never packed, or a
    sender that is not UTF-8: counted once, one BadFrame, nothing sent, no raise."""
    node = _node()
    effects = node.receive(frames, 1.0)
    assert effects.frames == []
    assert [type(e).__name__ for e in effects.events] == ["BadFrame"]
    assert node.stats["bad_frames"] == 1
    assert why in node.last_bad.lower()
    assert "\n" not in node.last_bad
