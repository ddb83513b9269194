"""RouteTable against the reference: a real RabbitMQ topic exchange.

One queue is bound per pattern, every key is published once (with publisher
confirms, so every copy is enqueued before the publish returns), and the keys
each queue received must be exactly those RouteTable.lookup sends to that
pattern.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pika
import pytest

from tests.rabbitmq import RabbitMQ
from tests.routecases import CASES, KEY_WORDS, PATTERN_WORDS
from zdse.wire.routes import RouteTable

pytestmark = pytest.mark.rabbitmq

SEED = 20261127
RANDOM_PATTERNS = 120
RANDOM_KEYS = 500


def random_addresses(rng: random.Random, words: list[str], count: int, most: int) -> list[str]:
    """``count`` addresses of 0..``most`` words drawn from ``words``."""
    return [".".join(rng.choice(words) for _ in range(rng.randint(0, most))) for _ in range(count)]


def unique(items: list[str]) -> list[str]:
    """``items`` without repeats, in first-seen order."""
    return list(dict.fromkeys(items))


def route_through_rabbitmq(url: str, patterns: list[str], keys: list[str]) -> dict[str, list[str]]:
    """Publish every key once to a topic exchange; return, per key, the patterns it reached.

    A pattern appears once per copy its queue received, so a duplicate
    delivery shows up as a repeat.
    """
    received: dict[str, list[str]] = {key: [] for key in keys}
    exchange = f"zdse.test_routes.{uuid.uuid4().hex}"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        # auto_delete: gone with the last binding, i.e. when our exclusive
        # queues go with the connection, even if this test fails half-way.
        channel.exchange_declare(exchange, exchange_type="topic", auto_delete=True)
        queues: dict[str, str] = {}
        for pattern in patterns:
            queue = channel.queue_declare("", exclusive=True).method.queue
            channel.queue_bind(queue, exchange, routing_key=pattern)
            queues[queue] = pattern
        channel.confirm_delivery()
        for key in keys:
            channel.basic_publish(exchange, key, key.encode())
        for queue, pattern in queues.items():
            while True:
                method, _properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                assert method.routing_key == body.decode()
                received[body.decode()].append(pattern)
    finally:
        connection.close()
    return received


def test_route_table_matches_rabbitmq_topic_exchange(rabbitmq: RabbitMQ) -> None:
    """Each key reaches exactly the queues of the patterns RouteTable.lookup returns."""
    rng = random.Random(SEED)
    patterns = unique(
        [p for p, _, _ in CASES] + random_addresses(rng, PATTERN_WORDS, RANDOM_PATTERNS, 4)
    )
    keys = unique([k for _, k, _ in CASES] + random_addresses(rng, KEY_WORDS, RANDOM_KEYS, 5))
    table: RouteTable[str] = RouteTable()
    for pattern in patterns:
        table.add(pattern, pattern)

    received = route_through_rabbitmq(rabbitmq.url(), patterns, keys)

    problems: list[str] = []
    for key in keys:
        copies = Counter(received[key])
        repeated = sorted(p for p, n in copies.items() if n > 1)
        if repeated:
            problems.append(f"key {key!r}: RabbitMQ delivered more than once to {repeated}")
        rabbit = set(copies)
        ours = set(table.lookup(key))
        if rabbit != ours:
            problems.append(
                f"key {key!r}: only RabbitMQ routes to {sorted(rabbit - ours)}, "
                f"only RouteTable to {sorted(ours - rabbit)}"
            )
    for pattern, key, expected in CASES:
        if (pattern in received[key]) is not expected:
            problems.append(
                f"case ({pattern!r}, {key!r}, {expected}): RabbitMQ says {not expected}"
            )
    assert not problems, (
        f"{len(problems)} disagreement(s) over {len(patterns)} patterns x {len(keys)} keys:\n"
        + "\n".join(problems)
    )
    # The comparison means something only if routing actually happened.
    assert sum(len(v) for v in received.values()) > len(keys)
