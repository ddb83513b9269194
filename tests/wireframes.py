"""Valid frames of every kind, as each socket carries them: the seeds of the fuzz tests,
and a flood of well-formed traffic for the fault tests."""

from __future__ import annotations

from zdse.wire import codec
from zdse.wire.codec import FLAG_GATHER, Kind

#: What a node sends the cage: ``[header, key, body]``, one of each kind (and some
#: kinds a node never sends, which the cage must refuse just as calmly).
NODE_FRAMES: list[list[bytes]] = [
    [codec.header(m.KIND, flags), key.encode(), codec.encode_one(m)]
    for m, key, flags in [
        (codec.Register("svc.a", ["x.#", "shared"], {"pid": 1}), "", 0),
        (codec.Heartbeat(), "", 0),
        (codec.Receipt(4096), "", 0),
        (codec.Bye(), "", 0),
        (codec.Request(7, "t", {"a": [1, 2]}), "svc.b", 0),
        (codec.Request(8, "t", None), "shared", FLAG_GATHER),
        (codec.Request(9, "stats", None), "cage", 0),
        (codec.Reply(7, True, [[1, "x"]]), "svc.b", 0),
        (codec.Message("m", {"k": 1.5}), "x.y", 0),
        (codec.Subscribe("sid", "t", {"svc.b": ["e", 3]}, 1.5), "svc.b", 0),
        (codec.Unsubscribe("sid", "t"), "svc.b", 0),
        (codec.Snapshot("sid", "t", "e", 3, [[1], [2]]), "svc.b", 0),
        (codec.Delta("t", "e", 4, ["rows", [[3]], [[1]]]), "t", 0),
        (codec.Subscribe("sid", "t", {"svc.b": ["e", 3, codec.GAP]}, 1.5), "svc.b", 0),
        (codec.Replay("t", "e", 4, ["rows", [[3]], [[1]]]), "svc.b", 0),
        (codec.Welcome("e", 1.0), "", 0),
        (codec.Error("x", "y"), "", 0),
        (codec.Left("svc.b", "bye"), "", 0),
    ]
]

#: What a node gets from the cage's ROUTER: ``[header, sender, key, body]``.
DEALER_FRAMES: list[list[bytes]] = [
    [codec.header(m.KIND), sender.encode(), key.encode(), codec.encode_one(m)]
    for m, sender, key in [
        (codec.Welcome("cage-2", 0.5), "cage", ""),
        (codec.Heartbeat("cage-1"), "cage", ""),
        (codec.Request(3, "t", None), "pub", "node"),
        (codec.Request(4, "pubdata", None), "pub", "node"),
        (codec.Reply(1, True, [[1]]), "pub", "node"),
        (codec.Reply(1, False, ["Boom", "no"]), "pub", "node"),
        (codec.Message("m", [1]), "pub", "node"),
        (codec.Subscribe("s2", "t", {}, 2.0), "other", "node"),
        (codec.Unsubscribe("s2", "t"), "other", "node"),
        (codec.Snapshot("sid", "t", "e9", 5, [[5]]), "pub", "node"),
        (codec.Replay("t", "e9", 6, ["rows", [[6]], []]), "pub", "node"),
        (codec.Subscribe("s2", "t", {"node": ["e", 1, codec.GAP]}, 2.0), "other", "node"),
        (codec.NoRoute(int(Kind.REQUEST), "k",
                       codec.encode_one(codec.Request(1, "t", None))), "cage", "k"),
        (codec.NoRoute(int(Kind.SUBSCRIBE), "k",
                       codec.encode_one(codec.Subscribe("sid", "t", {}, 1.0))), "cage", "k"),
        (codec.Fanout(2, codec.encode_one(codec.Request(1, "t", None))), "cage", "k"),
        (codec.Error("not_registered", "register"), "cage", ""),
        (codec.Error("name_taken", "taken"), "cage", ""),
        (codec.Error("over_budget", "3 messages (96 bytes) for you were dropped"), "cage", ""),
    ]
]

#: What a node gets from the cage's PUB socket: ``[topic, header, body]``.
PUB_FRAMES: list[list[bytes]] = [
    [codec.topic("pub", "t"), codec.header(Kind.DELTA),
     codec.encode_one(codec.Delta("t", "e9", 6, ["rows", [[6]], [[5]]]))],
    [codec.topic("pub", "t"), codec.header(Kind.DELTA),
     codec.encode_one(codec.Delta("t", "e9", 9, ["keys", {"a": 1}, ["b"]]))],
    [codec.EVENT_TOPIC, codec.header(Kind.JOINED),
     codec.encode_one(codec.Joined("pub", ["pub", "shared.#"]))],
    [codec.EVENT_TOPIC, codec.header(Kind.LEFT), codec.encode_one(codec.Left("pub", "expired"))],
]
