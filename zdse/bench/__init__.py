"""``zdse-bench``: the bus's hot paths measured side by side with NATS.

Each scenario starts its own servers (the cage, a bare ZeroMQ forwarder as
the transport's floor, and with ``--vs nats`` a ``nats-server``) on free
loopback ports, runs the same worker processes against each in turn, round
after round, and reports medians and ratios. benchmarks/README.md explains
the numbers.
"""
