"""Emit OpenStack notifications with the real oslo.messaging Notifier, as Nova does.

The tests run it as a process of its own: oslo.messaging brings eventlet
(deprecation warnings at import), global configuration and threads, none of
which belongs inside pytest. Usage::

    python -m tests.oslo_notifier rabbit://guest:guest@127.0.0.1:PORT/VHOST \\
        [--driver messagingv2] [--exchange nova] [--publisher compute.host1]

It reads one JSON command per line on stdin::

    {"event_type": "compute.instance.update", "payload": {...},
     "priority": "info", "context": {"request_id": "req-1", ...}}

where ``context`` holds keyword arguments of oslo.context's RequestContext.

and writes JSON events on stderr, one per line, for the tests to wait on:
``{"event": "ready"}`` once the Notifier exists, then
``{"event": "emitted", "count": N, "at": UNIX_TIME}`` after each Notifier
call returned.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def event(name: str, **fields: Any) -> None:
    """Write one JSON event line on stderr."""
    sys.stderr.write(json.dumps({"event": name, **fields}) + "\n")
    sys.stderr.flush()


def main() -> int:
    """Emit each notification read from stdin; exit at end of input."""
    parser = argparse.ArgumentParser(prog="oslo_notifier")
    parser.add_argument("url", help="oslo transport URL, rabbit://USER:PASS@HOST:PORT/VHOST")
    parser.add_argument("--driver", default="messagingv2", help="messagingv2 or messaging (v1)")
    parser.add_argument("--exchange", default="nova", help="the service's control_exchange")
    parser.add_argument("--publisher", default="compute.host1")
    parser.add_argument("--topic", default="notifications")
    args = parser.parse_args()

    import oslo_messaging
    from oslo_config import cfg
    from oslo_context import context

    # What nova/rpc.py does: its exchange is the transport's default exchange.
    oslo_messaging.set_transport_defaults(control_exchange=args.exchange)
    conf = cfg.ConfigOpts()
    conf([], project="zdse-tests")
    transport = oslo_messaging.get_notification_transport(conf, url=args.url)
    # Reconnect fast after the tests restart the broker (oslo's defaults wait
    # up to 30 s between attempts).
    conf.set_override("rabbit_retry_interval", 1, group="oslo_messaging_rabbit")
    conf.set_override("rabbit_retry_backoff", 1, group="oslo_messaging_rabbit")
    conf.set_override("rabbit_interval_max", 2, group="oslo_messaging_rabbit")
    notifier = oslo_messaging.Notifier(
        transport, publisher_id=args.publisher, driver=args.driver, topics=[args.topic]
    )
    event("ready")
    count = 0
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            emit = getattr(notifier, command.get("priority", "info"))
            # A RequestContext, as Nova passes: oslo sends its redacted copy
            # (a plain dict would be dropped).
            ctxt = context.RequestContext(**command.get("context", {}))
            emit(ctxt, command["event_type"], command["payload"])
            count += 1
            event("emitted", count=count, at=time.time())
    finally:
        transport.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
