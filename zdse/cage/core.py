"""The cage's decisions: registration, expiry, routing. Pure: no zmq, no clock.

The proxy process feeds the multipart messages its ROUTER received in one
loop iteration into :meth:`CageCore.receive`, with the time it read once for
the whole batch, and does what the core returns: an
:class:`~zdse.cage.effects.Effects` of frames to send, lines to log and
control requests to answer. Every input (``receive``, ``tick``,
``unreachable``, ``reply``) returns its effects; the core calls nothing of
the shell's. Bodies of routed messages are never decoded: the core reads the
3-byte header and the key, looks the key up and forwards the frames with the
true sender stamped.

Every message queued for a node counts in that connection's byte budget
(:mod:`zdse.wire.receipts`): one that would leave more than ``queue_bytes``
unread on the way to it is dropped and counted, and the node is told when
it has caught up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zdse.cage.authz import Authorized
from zdse.cage.effects import Control, Effects, Log
from zdse.cage.tables import TABLES, CageTables
from zdse.errors import ProtocolError
from zdse.log import sampled
from zdse.wire import codec
from zdse.wire.codec import CAGE, EVENT_TOPIC, FLAG_GATHER, Kind
from zdse.wire.limits import (
    FRAME_COST,
    HEARTBEAT_INTERVAL,
    HEARTBEATS_TO_EXPIRE,
    MAX_COUNTED_SUBSCRIPTIONS,
    MAX_LEFT_ACCOUNTS,
    MAX_MESSAGE_BYTES,
    NODE_QUEUE_BYTES,
    REFRESHES_TO_EXPIRE,
    SUBSCRIPTION_REFRESH,
)
from zdse.wire.receipts import Account, wire_cost
from zdse.wire.routes import RouteTable

__all__ = ["CageCore", "NodeRecord", "merge_services"]

#: Seconds a (subscriber, key) pair counts as a live subscription after its
#: last announce: the default subscription ttl (the cage cannot read a ttl
#: without decoding the body).
SUBSCRIPTION_TTL = SUBSCRIPTION_REFRESH * REFRESHES_TO_EXPIRE

# Precomputed header bytes -> (kind, flags) for every valid header, so the
# hot path does one dict lookup instead of parsing.
_VALID_HEADERS = {
    codec.header(k, f): (k, f) for k in Kind for f in (0, FLAG_GATHER)
}
_REPLY_HEADER = codec.header(Kind.REPLY)
_HEARTBEAT_HEADER = codec.header(Kind.HEARTBEAT)
_CAGE_BYTES = CAGE.encode()
#: What a routed message costs in a budget besides its sender, key and body.
_ROUTED_COST = 3 + FRAME_COST


@dataclass(slots=True)
class NodeRecord:
    """A registered node, as the cage knows it."""

    identity: bytes
    name: str
    addresses: list[str]
    info: dict[str, Any]
    registered_at: float
    last_seen: float
    name_bytes: bytes = b""

    def __post_init__(self) -> None:
        self.name_bytes = self.name.encode()


@dataclass(slots=True)
class _Claim:
    identity: bytes
    register: codec.Register
    deadline: float
    holder_seen: float


class CageCore:
    """Route table, registrations and counters of one cage.

    Args:
        epoch: identifies this run of the cage; nodes re-register when it changes.
        heartbeat: seconds between heartbeats, told to every node at registration.
        heartbeats_to_expire: missed heartbeats after which a node is expired.
        queue_bytes: bytes that may wait unread on their way to one node
            (its byte budget, see :mod:`zdse.wire.receipts`).
    """

    def __init__(
        self,
        epoch: str,
        heartbeat: float = HEARTBEAT_INTERVAL,
        heartbeats_to_expire: int = HEARTBEATS_TO_EXPIRE,
        started_at: float = 0.0,
        authorized: Authorized | None = None,
        queue_bytes: int = NODE_QUEUE_BYTES,
    ) -> None:
        self.epoch = epoch
        self.queue_bytes = queue_bytes
        #: Byte accounts by connection: every registered node's, and those
        #: of nodes that left with bytes unread (the oldest forgotten past
        #: MAX_LEFT_ACCOUNTS), so registering again gives no fresh budget.
        self.accounts: dict[bytes, Account] = {}
        self.heartbeat = heartbeat
        self.expiry = heartbeat * heartbeats_to_expire
        self.started_at = started_at
        #: With CURVE: which key may register what. None: anyone may.
        self.authorized = authorized
        #: CURVE keys of this batch's registering connections (see receive()).
        self._keys: Mapping[bytes, str] = {}
        self.routes: RouteTable[bytes] = RouteTable()
        self.nodes: dict[bytes, NodeRecord] = {}
        self.names: dict[str, bytes] = {}
        self.claims: dict[str, _Claim] = {}
        self.stats: Counter[str] = Counter()
        #: What the input being handled asks of the shell: a fresh one per
        #: input, returned by it (never read by the shell in between).
        self._out = Effects()
        self.last_bad = ""
        self._last_tick: float | None = None
        #: Until then nobody is expired and no name claim is decided: the
        #: cage has just come back from a stall (see tick()).
        self._grace_until = float("-inf")
        #: Control requests, by dataindex, that the shell answers (the
        #: supervisor: start, stop, reload, ...): see serve().
        self._served: frozenset[str] = frozenset()
        #: The supervisor's rows of its services, merged into the services
        #: table (see supervised()); None without a supervisor.
        self._supervised: list[dict[str, Any]] | None = None
        # Counters for metrics, read at scrape time (docs/operations.md).
        #: Frames routed, by header (kind and flags).
        self.routed: dict[bytes, int] = dict.fromkeys(_VALID_HEADERS, 0)
        #: Routed frames nothing listened for, by kind name.
        self.noroute: Counter[str] = Counter()
        #: Frames dropped because the destination's queue was full, by kind
        #: name and by node name.
        self.dropped_kinds: Counter[str] = Counter()
        self.dropped_nodes: Counter[str] = Counter()
        #: Messages refused because their node's byte budget was full, by kind.
        self.over_budget_kinds: Counter[str] = Counter()
        #: Loop wake-ups by frames handled, bucketed: key k counts wake-ups
        #: that handled (2**(k-1), 2**k] frames; ``batch_frames`` is the sum.
        self.batches: Counter[int] = Counter()
        self.batch_frames = 0
        #: (subscriber identity, key) -> last time it announced a subscription.
        self.subscribers: dict[tuple[bytes, bytes], float] = {}
        self._next_prune = started_at + SUBSCRIPTION_TTL
        #: The cage's own publications (services, routes): see zdse.cage.tables.
        self.tables = CageTables(epoch, self._table_rows)
        self._beat = codec.encode_one(codec.Heartbeat(epoch))

    # --- the hot path ------------------------------------------------------

    def receive(
        self, batch: Iterable[list[bytes]], now: float, keys: Mapping[bytes, str] | None = None
    ) -> Effects:
        """Handle the multipart messages the ROUTER gave in one loop iteration.

        Args:
            batch: the messages, each identity first.
            now: the time, read once for the whole batch.
            keys: with CURVE, the key each connection that sent a Register
                in this batch came with (ZeroMQ's User-Id).

        Returns:
            what the shell must do.
        """
        self._out = Effects()
        self._keys = keys or {}
        for frames in batch:
            self._receive(frames, now)
        return self._finish(now)

    def _receive(self, frames: list[bytes], now: float) -> None:
        """Handle one multipart message from the ROUTER (identity first).

        ``[identity, header, key, body]``, or ``[identity, packed]`` for a
        routed message (:func:`zdse.wire.codec.pack`), which is forwarded
        packed as it came: ``[destination, sender, packed]``.
        """
        packed: bytes | None = None
        if len(frames) == 2:
            identity, packed = frames
            try:
                head, key_bytes, body = codec.unpack(packed)
            except ProtocolError as exc:
                self._bad(identity, str(exc))
                return
        elif len(frames) == 4:
            identity, head, key_bytes, body = frames
        else:
            self._bad(frames[0] if frames else b"", f"expected 2 or 4 frames, got {len(frames)}")
            return
        parsed = _VALID_HEADERS.get(head)
        if parsed is None:
            try:
                codec.parse_header(head)
                reason = "header not valid from a node"
            except ProtocolError as exc:
                reason = str(exc)
            self._bad(identity, reason)
            return
        kind, flags = parsed
        if packed is not None and kind not in codec.ROUTED_KINDS:
            self._bad(identity, f"{kind.name} is not sent packed")
            return
        if len(body) > MAX_MESSAGE_BYTES:
            self.stats["too_large"] += 1
            self._error(identity, "too_large", f"message of {len(body)} bytes exceeds "
                        f"MAX_MESSAGE_BYTES ({MAX_MESSAGE_BYTES})")
            return
        node = self.nodes.get(identity)
        if kind in codec.ROUTED_KINDS:
            if node is None:
                self._not_registered(identity)
                return
            node.last_seen = now
            try:
                key = key_bytes.decode()
            except UnicodeDecodeError:
                self._bad(identity, "key is not UTF-8")
                return
            if key == CAGE:
                self._control(node, kind, body, now)
                return
            dests = self.routes.lookup(key)
            if not dests:
                self._noroute(identity, kind, key, body)
                return
            self.routed[head] += 1
            if kind is Kind.SUBSCRIBE:
                pair = (identity, key_bytes)
                if pair in self.subscribers or len(self.subscribers) < MAX_COUNTED_SUBSCRIPTIONS:
                    self.subscribers[pair] = now
                else:
                    self.stats["subscriptions_uncounted"] += 1
            out = self._out.router
            sender = node.name_bytes
            cost = (len(sender) + len(key_bytes) + len(body) + _ROUTED_COST if packed is None
                    else len(sender) + len(packed) + FRAME_COST)
            accounts, budget = self.accounts, self.queue_bytes
            for dest in dests:
                # Account.admit, inline: this runs once per destination.
                acct = accounts[dest]
                unacked = acct.sent - acct.acked
                if unacked and unacked + cost > budget:
                    self._over_budget(dest, acct, kind, cost)
                    continue
                acct.sent += cost
                out.append([dest, head, sender, key_bytes, body] if packed is None
                           else [dest, sender, packed])
            if flags & FLAG_GATHER and kind is Kind.REQUEST:
                fanout = codec.encode_one(codec.Fanout(len(dests), body))
                self._send([identity, codec.header(Kind.FANOUT), _CAGE_BYTES, key_bytes, fanout])
        elif kind is Kind.DELTA:
            if node is None:
                self._not_registered(identity)
                return
            node.last_seen = now
            self.stats["published"] += 1
            self._out.pub.append([node.name_bytes + b"\x00" + key_bytes + b"\x00", head, body])
        elif kind is Kind.HEARTBEAT:
            if node is None:
                self._not_registered(identity)
                return
            node.last_seen = now
            self._probe(identity)
        elif kind is Kind.RECEIPT:
            self._receipt(identity, node, body, now)
        elif kind is Kind.REGISTER:
            self._register(identity, body, now)
        elif kind is Kind.BYE:
            if node is not None:
                self._remove(node, "bye")
            else:
                # Counted like any stranger's message (every frame is
                # counted somewhere); a leaving node needs no error back.
                self.stats["not_registered"] += 1
        else:
            self._bad(identity, f"{kind.name} is not sent by nodes")

    # --- registration ------------------------------------------------------

    def _register(self, identity: bytes, body: bytes, now: float) -> None:
        try:
            # Retries coalesced into one frame: the last one speaks.
            reg = codec.decode_body(Kind.REGISTER, body)[-1]
        except ProtocolError as exc:
            self._bad(identity, f"bad register: {exc}")
            self._error(identity, "bad_register", str(exc))
            return
        assert isinstance(reg, codec.Register)
        if self.authorized is not None:
            key = self._keys.get(identity, "")
            refusal = self.authorized.check(key, reg)
            if refusal is not None:
                self.stats["forbidden"] += 1
                self._log("node.forbidden", {"name": reg.name, "why": refusal})
                self._error(identity, "forbidden", refusal)
                return
        holder_id = self.names.get(reg.name)
        if holder_id is None or holder_id == identity:
            self._accept(identity, reg, now)
            return
        holder = self.nodes[holder_id]
        if reg.name in self.claims:
            self._refuse(identity, reg.name, "another claim of it is being decided")
            return
        # The holder may be a dead process whose expiry has not come yet (a
        # node restarted at once after kill -9): probe it. A ROUTER_MANDATORY
        # send to a closed connection fails at once (see unreachable());
        # otherwise a holder that says nothing for one and a half heartbeats
        # is taken for dead, and one that does speak keeps its name.
        self.claims[reg.name] = _Claim(identity, reg, now + 1.5 * self.heartbeat, holder.last_seen)
        self._probe(holder_id)

    def _accept(self, identity: bytes, reg: codec.Register, now: float) -> None:
        old = self.nodes.get(identity)
        self.tables.stale = True
        if old is not None and old.name == reg.name:
            self._readdress(old, reg)
            return
        if old is not None:
            self._remove(old, "re-registered", announce=old.name != reg.name)
        record = NodeRecord(identity, reg.name, list(reg.addresses), dict(reg.info), now, now)
        self.nodes[identity] = record
        self.names[reg.name] = identity
        for pattern in self._patterns(record):
            self.routes.add(pattern, identity)
        self.stats["registered"] += 1
        self._log("node.registered", {"name": reg.name, "addresses": reg.addresses,
                                                 "module": reg.info.get("module", "")})
        # A connection registering again keeps its account (what it has not
        # read is still on its way): the welcome says how far it goes.
        acct = self.accounts.pop(identity, None)
        if acct is None:
            acct = Account()
        self.accounts[identity] = acct
        welcome = codec.encode_one(codec.Welcome(self.epoch, self.heartbeat, acct.sent))
        self._send([identity, codec.header(Kind.WELCOME), _CAGE_BYTES, b"", welcome])
        self._event(codec.Joined(record.name, [record.name, *record.addresses]))

    def _readdress(self, record: NodeRecord, reg: codec.Register) -> None:
        """A registered node registered again under its name: its addresses may have changed.

        Its routes follow at once, in place (its subscribers are kept); the
        Joined event lets subscribers announce to it on the new addresses.
        """
        before, after = set(self._patterns(record)), set(self._patterns_of(reg.name, reg.addresses))
        for pattern in before - after:
            self.routes.remove(pattern, record.identity)
        for pattern in after - before:
            self.routes.add(pattern, record.identity)
        changed = record.addresses != list(reg.addresses)
        record.addresses = list(reg.addresses)
        record.info = dict(reg.info)
        acct = self.accounts.get(record.identity)
        welcome = codec.encode_one(codec.Welcome(self.epoch, self.heartbeat,
                                                 acct.sent if acct else 0))
        self._send([record.identity, codec.header(Kind.WELCOME), _CAGE_BYTES, b"", welcome])
        if changed:
            self.stats["readdressed"] += 1
            self._log("node.readdressed", {"name": reg.name,
                                                     "addresses": reg.addresses})
            self._event(codec.Joined(record.name, [record.name, *record.addresses]))

    def _refuse(self, identity: bytes, name: str, why: str) -> None:
        self.stats["refused"] += 1
        self._log("node.refused", {"name": name, "why": why})
        self._error(identity, "name_taken", f"name {name!r} is held by a live node ({why})")

    @staticmethod
    def _patterns(record: NodeRecord) -> list[str]:
        return CageCore._patterns_of(record.name, record.addresses)

    @staticmethod
    def _patterns_of(name: str, addresses: list[str]) -> list[str]:
        return [name, codec.ALL_SERVICES, *addresses]

    def _remove(self, record: NodeRecord, reason: str, announce: bool = True) -> None:
        self.nodes.pop(record.identity, None)
        if self.names.get(record.name) == record.identity:
            del self.names[record.name]
        for pattern in self._patterns(record):
            self.routes.remove(pattern, record.identity)
        for pair in [p for p in self.subscribers if p[0] == record.identity]:
            del self.subscribers[pair]
        self._leave_account(record.identity)
        self.tables.stale = True
        self.tables.forget(record.name)
        self.stats[f"left_{reason}".replace("-", "_")] += 1
        self._log("node.left", {"name": record.name, "reason": reason})
        if announce:
            self._event(codec.Left(record.name, reason))

    # --- time and transport feedback --------------------------------------

    def tick(self, now: float) -> Effects:
        """Expire silent nodes and decide name claims whose probe timed out.

        Returns:
            what the shell must do.

        The shell ticks several times a beat. Ticks more than a beat apart
        mean the cage itself did not run (stopped, its machine paused, its
        loop held up): what the nodes sent meanwhile waits unread in its
        queues, so their silence is the cage's. Then for one beat nobody is
        expired and no claim decided, while the cage reads what queued. At
        most one such beat per expiry: a cage late at every tick (overloaded)
        still expires the silent.
        """
        self._out = Effects()
        self._tick(now)
        return self._finish(now)

    def _tick(self, now: float) -> None:
        last, self._last_tick = self._last_tick, now
        if (last is not None and now - last > self.heartbeat
                and now >= self._grace_until + self.expiry):
            self._grace_until = now + self.heartbeat
            self.stats["stalls"] += 1
            self._log("cage.stalled", {"seconds": round(now - last, 3)})
        waiting = now < self._grace_until
        self.tables.expire(now)
        self.tables.refresh(now, self._out)
        if now >= self._next_prune:
            # Forget subscription announces older than the ttl, now and then.
            self._next_prune = now + SUBSCRIPTION_TTL
            stale = now - SUBSCRIPTION_TTL
            for pair in [p for p, seen in self.subscribers.items() if seen < stale]:
                del self.subscribers[pair]
        for name, claim in list(self.claims.items()):
            holder_id = self.names.get(name)
            holder = self.nodes.get(holder_id) if holder_id is not None else None
            if holder is not None and holder.last_seen > claim.holder_seen:
                del self.claims[name]
                self._refuse(claim.identity, name, "it answered the probe")
            elif holder is None or (now >= claim.deadline and not waiting):
                del self.claims[name]
                if holder is not None:
                    self._remove(holder, "replaced")
                self._accept(claim.identity, claim.register, now)
        cutoff = now - self.expiry
        late = now - self.heartbeat
        for record in list(self.nodes.values()):
            if record.last_seen < cutoff and not waiting:
                self._remove(record, "expired")
            elif record.last_seen < late:
                # A beat late: probe it. A node killed outright has no
                # connection left, which ROUTER_MANDATORY reports at once
                # (see unreachable()), so its subscribers hear of it within
                # a beat or two instead of at its expiry.
                self._probe(record.identity)

    def unreachable(self, identity: bytes, now: float) -> Effects:
        """The transport says ``identity`` has no connection: drop it at once.

        Returns:
            what the shell must do (its subscribers hear that it left).
        """
        self._out = Effects()
        self.stats["unreachable"] += 1
        # Its connection is gone, and with it what was queued for it.
        self.accounts.pop(identity, None)
        record = self.nodes.get(identity)
        if record is not None:
            self._remove(record, "disconnected")
            self._tick(now)
        return self._finish(now)

    def dropped(self, count: int = 1, frames: list[bytes] | None = None) -> None:
        """Count messages the transport dropped because a node's queue was full.

        Args:
            count: how many.
            frames: the dropped message (identity first), to count it
                by kind and by destination node.
        """
        self.stats["dropped_hwm"] += count
        if frames is not None and len(frames) > 1:
            # [identity, header, sender, key, body] or [identity, sender, packed].
            parsed = _VALID_HEADERS.get(frames[2][:3] if len(frames) == 3 else frames[1])
            self.dropped_kinds[parsed[0].name.lower() if parsed else "other"] += count
            node = self.nodes.get(frames[0])
            self.dropped_nodes[node.name if node else "(gone)"] += count
            acct = self.accounts.get(frames[0])
            if acct is not None and len(frames) in (3, 5):
                acct.unsent(wire_cost(*frames[1:]))

    def drained(self, count: int) -> None:
        """Count one loop wake-up that handled ``count`` frames (batch sizes)."""
        if count > 0:
            self.batches[(count - 1).bit_length()] += 1
            self.batch_frames += count

    def live_subscriptions(self, now: float) -> int:
        """(subscriber, key) pairs that announced a subscription within the ttl."""
        cutoff = now - SUBSCRIPTION_TTL
        return sum(1 for seen in self.subscribers.values() if seen >= cutoff)

    # --- byte budgets -------------------------------------------------------

    def _send(self, frames: list[bytes]) -> None:
        """Queue ``[identity, header, sender, key, body]``, within its connection's budget."""
        acct = self.accounts.get(frames[0])
        if acct is not None:
            cost = wire_cost(frames[1], frames[2], frames[3], frames[4])
            if not acct.admit(cost, self.queue_bytes):
                self._over_budget(frames[0], acct, _VALID_HEADERS[frames[1]][0], cost, counted=True)
                return
        self._out.router.append(frames)

    def _over_budget(
        self, identity: bytes, acct: Account, kind: Kind, cost: int, counted: bool = False
    ) -> None:
        """A message for ``identity`` did not fit its budget: count it, and say so once."""
        if not counted:
            acct.refused += 1
            acct.refused_bytes += cost
        self.stats["dropped_budget"] += 1
        self.over_budget_kinds[kind.name.lower()] += 1
        node = self.nodes.get(identity)
        name = node.name if node is not None else "(gone)"
        self.dropped_nodes[name] += 1
        if acct.refused == 1:
            # Once per spell: the first refusal since the node was last told.
            self._log("node.over_budget", {
                "name": name, "unread": acct.unacked, "budget": self.queue_bytes})

    def _receipt(self, identity: bytes, node: NodeRecord | None, body: bytes, now: float) -> None:
        acct = self.accounts.get(identity)
        if node is not None:
            node.last_seen = now
        if acct is None:
            self.stats["not_registered"] += 1
            return
        try:
            receipts = codec.decode_body(Kind.RECEIPT, body)
        except ProtocolError as exc:
            self._bad(identity, f"bad receipt: {exc}")
            return
        for receipt in receipts:
            assert isinstance(receipt, codec.Receipt)
            acct.receipt(receipt.read)
        if node is None:
            if not acct.unacked:
                del self.accounts[identity]  # it left, and has read all
        elif acct.refused and acct.unacked <= self.queue_bytes // 2:
            # Caught up: tell it what it missed, so it asks again.
            refused, refused_bytes = acct.refused, acct.refused_bytes
            acct.refused = acct.refused_bytes = 0
            self._error(identity, "over_budget",
                        f"{refused} messages ({refused_bytes} bytes) for you were dropped: "
                        f"more than {self.queue_bytes} bytes waited for you to read them")

    def _leave_account(self, identity: bytes) -> None:
        """Its node left: keep the account while bytes are unread, a bounded number of them."""
        acct = self.accounts.pop(identity, None)
        if acct is None or not acct.unacked:
            return
        self.accounts[identity] = acct  # now the newest
        if len(self.accounts) - len(self.nodes) > MAX_LEFT_ACCOUNTS:
            for old in self.accounts:
                if old not in self.nodes:
                    del self.accounts[old]
                    break

    # --- answers ------------------------------------------------------------

    def _event(self, msg: codec.Joined | codec.Left) -> None:
        self._out.pub.append([EVENT_TOPIC, codec.header(msg.KIND), codec.encode_one(msg)])

    def _probe(self, identity: bytes) -> None:
        """A heartbeat to ``identity``: the answer to its own, and the cage's probe."""
        self._send([identity, _HEARTBEAT_HEADER, _CAGE_BYTES, b"", self._beat])

    def _error(self, identity: bytes, code: str, message: str) -> None:
        body = codec.encode_one(codec.Error(code, message))
        self._send([identity, codec.header(Kind.ERROR), _CAGE_BYTES, b"", body])

    def _bad(self, identity: bytes, reason: str) -> None:
        self.stats["bad_frames"] += 1
        self.last_bad = reason
        if sampled(self.stats["bad_frames"]):
            self._log("frame.bad", {"reason": reason,
                                              "count": self.stats["bad_frames"]})

    def _not_registered(self, identity: bytes) -> None:
        self.stats["not_registered"] += 1
        self._error(identity, "not_registered", "register before sending")

    def _noroute(self, identity: bytes, kind: Kind, key: str, body: bytes) -> None:
        self.stats["noroute"] += 1
        self.noroute[kind.name.lower()] += 1
        if kind in codec.NOROUTE_KINDS:
            msg = codec.encode_one(codec.NoRoute(int(kind), key, body))
            self._send([identity, codec.header(Kind.NOROUTE), _CAGE_BYTES, key.encode(), msg])

    def _control(self, node: NodeRecord, kind: Kind, body: bytes, now: float) -> None:
        self.stats["control"] += 1
        if kind in (Kind.SUBSCRIBE, Kind.UNSUBSCRIBE):
            try:
                self.tables.receive(node.identity, node.name, kind, body, now, self._out)
            except ProtocolError as exc:
                self._bad(node.identity, f"bad subscription to the cage: {exc}")
            return
        if kind is not Kind.REQUEST:
            return
        try:
            requests = codec.decode_body(Kind.REQUEST, body)
        except ProtocolError as exc:
            self._bad(node.identity, f"bad control request: {exc}")
            return
        replies = []
        for req in requests:
            assert isinstance(req, codec.Request)
            answer = self._answer(req.dataindex, now)
            if req.dataindex in self._served:
                self._out.controls.append(Control(
                    (node.identity, node.name_bytes, req.cid), req.dataindex, req.args, answer))
            elif answer is None:
                known = ", ".join(["services", "routes", "stats", *sorted(self._served)])
                replies.append(codec.Reply(req.cid, False, [
                    "UnknownRequest", f"the cage answers {known}; not {req.dataindex!r}"]))
            else:
                replies.append(codec.Reply(req.cid, True, answer))
        if replies:
            self._send([node.identity, _REPLY_HEADER, _CAGE_BYTES, node.name_bytes,
                        codec.encode_body(replies)])

    # --- the shell's inputs and questions ----------------------------------

    def serve(self, dataindexes: Iterable[str]) -> None:
        """The shell answers control requests for ``dataindexes`` from now on.

        A request for one comes back as a :class:`~zdse.cage.effects.Control`
        carrying the core's own answer, if any (``services``: the registered
        nodes); the shell answers it with :meth:`reply`.
        """
        self._served = frozenset(dataindexes)

    def reply(self, to: tuple[bytes, bytes, int], ok: bool, value: Any, now: float) -> Effects:
        """Answer a :class:`~zdse.cage.effects.Control` the shell took.

        Args:
            to: the control request's ``to``.
            ok: False for an error reply; ``value`` is then ``[kind, message]``.
            value: the reply's value.
            now: the time.

        Returns:
            what the shell must do (send the reply).
        """
        self._out = Effects()
        identity, name, cid = to
        self._send([identity, _REPLY_HEADER, _CAGE_BYTES, name,
                    codec.encode_body([codec.Reply(cid, ok, value)])])
        return self._finish(now)

    def supervised(self, rows: list[dict[str, Any]] | None) -> None:
        """The supervisor's rows of its services (state, restarts, last error).

        They are merged into the ``services`` table (see :func:`merge_services`),
        published at the next input that refreshes it (every tick).
        """
        if rows != self._supervised:
            self._supervised = rows
            self.tables.stale = True

    def pid_of(self, name: str) -> int | None:
        """The pid the node registered under ``name`` said it runs as; None if no node holds it."""
        identity = self.names.get(name)
        record = self.nodes.get(identity) if identity is not None else None
        if record is None:
            return None
        pid = record.info.get("pid")
        return pid if isinstance(pid, int) else None

    def _finish(self, now: float) -> Effects:
        """End of an input: publish the tables if a registration changed them."""
        if self.tables.stale:
            # Once per input at most (a whole batch), never per message.
            self.tables.refresh(now, self._out)
        return self._out

    def _log(self, event: str, fields: dict[str, Any]) -> None:
        self._out.logs.append(Log(event, fields))

    def _answer(self, dataindex: str, now: float) -> Any:
        if dataindex == "services":
            return [
                {
                    "name": r.name,
                    "addresses": r.addresses,
                    "module": r.info.get("module", ""),
                    "pid": r.info.get("pid", 0),
                    "host": r.info.get("host", ""),
                    "uptime": round(now - r.registered_at, 3),
                    "last_seen": round(now - r.last_seen, 3),
                    "unread_bytes": self.accounts[r.identity].unacked,
                }
                for r in sorted(self.nodes.values(), key=lambda r: r.name)
            ]
        if dataindex == "routes":
            return sorted(
                [pattern, sorted(self.nodes[d].name for d in dests if d in self.nodes)]
                for pattern, dests in self.routes.bindings()
            )
        if dataindex == "stats":
            return {
                "epoch": self.epoch,
                "uptime": round(now - self.started_at, 3),
                "nodes": len(self.nodes),
                "routes": len(self.routes),
                **dict(sorted(self.stats.items())),
                "routed": sum(self.routed.values()),
            }
        if dataindex == codec.PUBDATA:
            return self.tables.publications.pubdata()
        if dataindex == codec.SUBDATA:
            return {}
        return None

    def _table_rows(self, dataindex: str, now: float) -> Any:
        """The rows of one of the cage's tables: what the control request answers."""
        assert dataindex in TABLES
        answer = self._answer(dataindex, now)
        if dataindex == "services" and self._supervised is not None:
            return merge_services(answer, self._supervised)
        return answer


def merge_services(
    registered: Sequence[Mapping[str, Any]] | None, supervised: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The cage's registered nodes and the supervisor's services, merged by name.

    Args:
        registered: the cage's ``services`` rows.
        supervised: the supervisor's rows (``SupervisorCore.rows``).

    Returns:
        one row per name, sorted: a node nobody supervises is ``running``;
        a supervised service not registered (yet, or any more) has no
        ``host`` and no ``last_seen``.
    """
    nodes = {row["name"]: row for row in registered or []}
    services = {row["name"]: row for row in supervised}
    rows = []
    for name in sorted(nodes.keys() | services.keys()):
        node, sup = nodes.get(name), services.get(name)
        if sup is None:
            assert node is not None
            rows.append({**node, "state": "running", "supervised": False, "restarts": 0,
                         "last_error": "", "retry_in": None})
            continue
        row = dict(node) if node is not None else {
            "name": name, "addresses": sup["addresses"], "module": sup["module"],
            "host": "", "uptime": sup["uptime"], "last_seen": None,
        }
        row.update(pid=sup["pid"], state=sup["state"], supervised=True,
                   restarts=sup["restarts"], last_error=sup["last_error"],
                   retry_in=sup["retry_in"])
        rows.append(row)
    return rows
