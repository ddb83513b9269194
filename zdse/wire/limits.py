"""Named limits and default timings, each with the reason for its value."""

from __future__ import annotations

#: Largest frame the cage accepts from a node. Tables of a few thousand rows
#: (a 2,000-VM vCenter is about 1 MiB) fit with room to spare; anything larger
#: is almost certainly a bug or an attack, and refusing it keeps one node from
#: filling the cage's memory.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: Largest part of a snapshot sent in parts: a table whose snapshot
#: exceeds it travels as parts of about this size, so neither end's loop
#: pauses long and the cage never holds more than a few parts of it per
#: peer. A subscriber decodes and indexes a part in one loop turn: 2 MiB of
#: 13-column rows (13,000) take it some 30 ms, and four times that on a
#: loaded machine, still well under a quarter heartbeat (4 MiB came near it).
PART_BYTES = 2 * 1024 * 1024

#: Largest entry (a row, or a dict table's key and value, packed) of a table
#: whose parts are cut as they are packed (a dict table, either way it is
#: published): a part holds PART_BYTES of entries and the one that crosses
#: its end, and must still fit one message.
MAX_ENTRY_BYTES = MAX_MESSAGE_BYTES - PART_BYTES

#: Largest snapshot a subscriber assembles from parts (its rows packed): a
#: publisher sending more is taken for broken or hostile, and the parts are
#: dropped as if one were lost. Ten million 150-byte rows, with room.
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024 * 1024

#: A node stops adding messages to one outgoing batch past this size, so that
#: a burst becomes several frames instead of one huge one that delays others.
MAX_BATCH_BYTES = 256 * 1024

#: A routed message (request, reply, one-way message, subscription traffic)
#: whose body is at most this size travels in one frame, its header and key
#: packed in front of the body (docs/protocol.md, "Frames"): two or three
#: pyzmq calls per hop fewer. A bigger body keeps frames of its own, so
#: nobody copies it to pack it.
PACK_LIMIT = 64 * 1024

#: Longest address or name; AMQP's own limit on routing keys.
MAX_ADDRESS_BYTES = 255

#: Bytes of deltas a node still sends a cage it holds for lost (silent for
#: an expiry) before it stops: a cage starved of the CPU, or stopped, for a
#: few beats reads them in order when it runs again and has expired nobody
#: meanwhile, so its subscribers see no gap; a dead cage's would only queue.
LOST_SEND_BYTES = 16 * 1024 * 1024

#: Seconds between heartbeats. Three missed ones expire a node.
HEARTBEAT_INTERVAL = 1.0
HEARTBEATS_TO_EXPIRE = 3

#: Seconds between re-announcements of a subscription (soft state); a
#: publisher forgets a subscriber after three missed ones.
SUBSCRIPTION_REFRESH = 10.0
REFRESHES_TO_EXPIRE = 3

#: Seconds a subscriber waits for deltas a publisher's Current says it sent
#: before asking for a snapshot. They cross the cage by another socket than
#: the Current and arrive within milliseconds; a second behind, they were
#: lost (a stalled subscriber's queue overflowed, or a cage died with them).
CURRENT_GRACE = 1.0

#: Deltas a subscriber buffers while it waits for a snapshot; past this it
#: drops the buffer, since the snapshot it waits for supersedes it anyway.
MAX_BUFFERED_DELTAS = 10_000

#: Deltas a publisher keeps per dataindex to resend to a subscriber that
#: missed some (zdse.node.history): the start race loses the deltas of one
#: round trip between the cage and two nodes, a few at 1,000 publishes a
#: second on a loaded machine; a cage killed, those in its queues. Past it,
#: the subscriber gets a snapshot, as before.
HISTORY_DELTAS = 512

#: Bytes of packed deltas a publisher keeps per dataindex (the same
#: history): the bound that matters for big deltas. A delta bigger than
#: this is not kept. At most this, plus a deque of HISTORY_DELTAS
#: pointers, per dataindex somebody subscribes to.
HISTORY_BYTES = 2 * 1024 * 1024

#: Bytes of packed deltas a publisher keeps, all its dataindexes together:
#: what bounds the history of a node publishing many tables. Past it, the
#: biggest histories are dropped whole.
HISTORY_TOTAL_BYTES = 32 * 1024 * 1024

#: Default seconds a request waits for its reply.
REQUEST_TIMEOUT = 10.0

#: Messages queued towards one node before the cage drops (and counts)
#: instead of blocking everyone: ZeroMQ's high-water mark on the ROUTER.
NODE_QUEUE_HWM = 100_000

#: Subscriptions a publisher holds, all together, for dataindexes it has not
#: published (yet): a subscriber may name any dataindex, and each held one
#: costs about 700 bytes, so 50,000 announces to made-up names cost 33 MB
#: before this bound. Past it an announce is answered, not recorded; it is
#: recorded when a re-announce finds the dataindex published. A few
#: thousand covers every table a real service would be asked for early.
MAX_WAITING_SUBSCRIPTIONS = 4096

#: Bytes the cage lets wait, unread, on their way to one node (its byte
#: budget; ``zdse-proxy --queue-bytes``). ZeroMQ's high-water marks count
#: messages, so without it a peer that asks for 4 MiB snapshots and never
#: reads made the cage hold 200 of them (1.1 GB). 64 MiB is four of the
#: largest messages, and at loopback speed a fraction of a second of
#: traffic: a node that reads keeps well inside it (its receipts return
#: every RECEIPT_BYTES).
NODE_QUEUE_BYTES = 64 * 1024 * 1024
#: The least byte budget accepted: below it receipts (every RECEIPT_BYTES)
#: would come too seldom for a node that does read to get anything through.
MIN_QUEUE_BYTES = 1024 * 1024

#: A node sends a receipt after reading this many bytes from the cage since
#: its last one (and at each heartbeat, if it read anything), so the cage
#: learns within a fraction of the budget what has left its queue.
RECEIPT_BYTES = 256 * 1024

#: Bytes a message costs in a budget beyond its frames' own: ZeroMQ's
#: bookkeeping of a queued message (a few 64-byte message structures), so a
#: flood of tiny messages costs something too.
FRAME_COST = 64

#: Byte accounts the cage keeps for connections whose node left (expired,
#: said bye) with bytes unread on their way to it, so that registering
#: again on the same connection gives no fresh budget. Past it the oldest
#: is forgotten. About 100 bytes each.
MAX_LEFT_ACCOUNTS = 10_000

#: (subscriber, key) pairs the cage remembers for its subscriptions gauge
#: until they age out (SUBSCRIPTION_TTL): any key that routes counts, so a
#: node announcing made-up keys under a wildcard address could otherwise
#: grow it for 30 s at a stretch. Past it, new pairs are not counted
#: (``subscriptions_uncounted`` in ``zdse-ctl stats``); routing is unchanged.
MAX_COUNTED_SUBSCRIPTIONS = 100_000
#: Subscriptions one service may hold to the cage's own tables (services,
#: routes): a client needs one or two; the bound keeps a hostile or buggy
#: node's fresh subscription ids from growing the cage's memory.
MAX_CAGE_SUBSCRIPTIONS = 64

#: Longest subscription id a caller may choose (Bus.subscribe(sid=...)):
#: it travels in every announce and snapshot.
MAX_SID_BYTES = 128

#: Seconds the cage gives the child process that builds new or changed
#: services unstarted to check their options (zdse.modules.check), at start
#: and on a reload. Importing the modules takes about half a second; the
#: rest is for constructors, which read their options and files and connect
#: to nothing. Routing never waits for it: the loop polls the child.
CONFIG_CHECK_TIMEOUT = 10.0

#: Shortest heartbeat a cage takes. The cage ticks four times a heartbeat and
#: every node sends one per heartbeat: below this the ticks and heartbeats
#: alone keep the processes busy and the stall detector logs every tick.
MIN_HEARTBEAT = 0.05

#: Shortest poll_interval a polling module takes: below it a poll loop takes
#: a whole core to find nothing new.
MIN_POLL_INTERVAL = 0.01

#: With several cages (docs/redundancy.md), the part of a heartbeat a
#: subscriber waits for another cage to bring the deltas missing before one
#: that came early, before it calls it a gap and asks for a snapshot. The
#: same delta through two cages on one machine's loopback differs by well
#: under a millisecond; across a network, by the difference of two paths.
GAP_WINDOW_BEATS = 0.25

#: With several cages, a gathered request comes once through each: a node
#: remembers this many (requester, correlation id) pairs, each for the
#: request's timeout, to run its handler once (docs/redundancy.md).
MAX_SEEN_REQUESTS = 10_000

#: With several cages, how many services some but not all cages said left
#: a node remembers (the oldest forgotten first): a service has left only
#: once every cage the node is registered with said so.
MAX_DEPARTURES = 10_000

#: Messages the cage reads per wake-up before it looks at its timers again,
#: so a flood cannot starve expiry; large enough that one wake-up pays the
#: poll's cost for thousands of messages.
CAGE_DRAIN_LIMIT = 4096
