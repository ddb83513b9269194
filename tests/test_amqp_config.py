"""The amqp bridge's options: parsing, checking, and keeping the password out of every message."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from zdse_nodes.amqp_config import from_options, redact, scrub

from zdse.backoff import backoff
from zdse.errors import ConfigError

URL = "amqp://nova:s3cr%40t@rabbit.example:5672/openstack"


def test_defaults_bind_nova_notifications_on_a_queue_named_after_the_bridge() -> None:
    """With only a URL: exchange nova, topic notifications, queue zdse.<name>."""
    config = from_options("openstack1", {"url": URL})
    assert config.urls == (URL,)
    assert config.bindings == [("nova", "notifications.*")]
    assert config.queue == "zdse.openstack1"
    assert not config.durable
    assert config.tables.window == 100
    assert dict(config.tables.keys) == {}


def test_every_option_is_read() -> None:
    """Each documented option lands in the config."""
    config = from_options("os2", {
        "url": URL, "exchanges": "nova, neutron,cinder", "topics": "notifications,alt",
        "queue": "my.queue", "durable": "true", "queue_expires": "60", "prefetch": "10",
        "max_body": "2048", "heartbeat": "5", "reconnect_min": "0.1", "reconnect_max": "2",
        "window": "7", "window_bytes": "4096", "latest_size": "9", "latest_bytes": "8192",
        "max_event_types": "50", "key.compute.instance.update": "instance_id, host",
        "key.port.create.end": "id", "event_types": "a.b, c.d",
    })
    assert config.exchanges == ("nova", "neutron", "cinder")
    assert config.bindings[:2] == [("nova", "notifications.*"), ("nova", "alt.*")]
    assert len(config.bindings) == 6
    assert (config.queue, config.durable, config.queue_expires) == ("my.queue", True, 60.0)
    assert (config.prefetch, config.max_body, config.heartbeat) == (10, 2048, 5)
    assert (config.reconnect_min, config.reconnect_max) == (0.1, 2.0)
    t = config.tables
    assert (t.window, t.window_bytes, t.latest_size, t.latest_bytes) == (7, 4096, 9, 8192)
    assert t.max_event_types == 50
    assert t.event_types == ("a.b", "c.d")
    assert dict(t.keys) == {"compute.instance.update": ("instance_id", "host"),
                            "port.create.end": ("id",)}


def test_oslo_transport_urls_with_several_hosts_become_one_url_per_host() -> None:
    """A pasted nova.conf transport_url works: rabbit:// and comma-separated hosts."""
    config = from_options("o", {"url": "rabbit://u:p1@h1:5672,u:p2@h2:5673/vh?heartbeat=9"})
    assert config.urls == ("amqp://u:p1@h1:5672/vh?heartbeat=9",
                           "amqp://u:p2@h2:5673/vh?heartbeat=9")
    assert set(config.secrets) == {"p1", "p2"}
    assert config.safe_urls() == ["amqp://u:***@h1:5672/vh?heartbeat=9",
                                  "amqp://u:***@h2:5673/vh?heartbeat=9"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs --set url="),
        ({"url": "http://u:pw@h/"}, "scheme 'http'"),
        ({"url": "u:pw@h"}, "not a URL"),
        ({"url": "amqp://u:pw@:5672/"}, "host 1 has no host name"),
        ({"url": "amqp://u:pw@h:99999/"}, "host 1 has a bad port"),
        ({"url": "amqp://u:pw@h:x/"}, "host 1 has a bad port"),
        ({"url": "amqp://u:pw@h,u:pw@/"}, "host 2 has no host name"),
        ({"url": URL, "colour": "blue"}, "no option 'colour'"),
        ({"url": URL, "exchanges": " , "}, "at least one name"),
        ({"url": URL, "exchanges": "nova,n#va"}, "'n#va' is not a usable name"),
        ({"url": URL, "topics": "notifications.*"}, "is not a usable name"),
        ({"url": URL, "queue": "a queue"}, "not a usable queue name"),
        ({"url": URL, "window": "0"}, "at least 1"),
        ({"url": URL, "window": "ten"}, "not a whole number"),
        ({"url": URL, "queue_expires": "-1"}, "above zero"),
        ({"url": URL, "reconnect_min": "nan"}, "above zero"),
        ({"url": URL, "reconnect_max": "inf"}, "finite"),
        ({"url": URL, "reconnect_min": "5", "reconnect_max": "1"}, "at least reconnect_min"),
        ({"url": URL, "prefetch": "70000"}, "at most 65535"),
        ({"url": URL, "durable": "maybe"}, "true or false"),
        ({"url": URL, "key.": "id"}, "no event type"),
        ({"url": URL, "key.a@b": "id"}, "holds '@'"),
        ({"url": URL, "key.a.b": ""}, "payload field names"),
        ({"url": URL, "key.a.b": "x@y"}, "payload field names"),
        ({"url": URL, "event_types": "a.b,c d"}, "holds ' '"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, str], message: str) -> None:
    """Each bad option gives a ConfigError that says what is wrong."""
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        from_options("o", options)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://u:pw@h:5672/v", "amqp://u:***@h:5672/v"),
        ("amqp://u@h/v", "amqp://u@h/v"),
        ("amqp://h", "amqp://h"),
        ("rabbit://u:a:b@h1,v:c@h2/v", "rabbit://u:***@h1,v:***@h2/v"),
        ("amqp://u:p@ss@h/", "amqp://u:***@h/"),
        ("nonsense", "<not a URL>"),
    ],
)
def test_redact_masks_every_password(url: str, masked: str) -> None:
    """Logged URLs keep user, host and vhost, never the password."""
    assert redact(url) == masked


def test_scrub_masks_raw_and_decoded_passwords() -> None:
    """An error quoting the URL, encoded or not, loses the password."""
    config = from_options("o", {"url": URL})
    text = f"cannot connect to {URL} (password s3cr@t)"
    assert "s3cr" not in scrub(text, config.secrets)


@pytest.mark.parametrize(
    ("attempt", "expected"), [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (10**6, 30.0)]
)
def test_backoff_doubles_up_to_the_cap(attempt: int, expected: float) -> None:
    """Reconnect waits double from the minimum and stop at the maximum."""
    assert backoff(attempt, 0.5, 30.0) == expected


passwords = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]),
                    min_size=6, max_size=20)


@given(passwords, st.sampled_from([
    {"url": "amqp://u:{pw}@:5672/"},
    {"url": "amqp://u:{pw}@h:bad/"},
    {"url": "http://u:{pw}@h/"},
    {"url": "amqp://u:{pw}@h/", "bogus": "1"},
    {"url": "amqp://u:{pw}@h/", "window": "x"},
]))
def test_no_config_error_repeats_the_password(pw: str, template: dict[str, Any]) -> None:
    """Whatever is wrong, the error message never holds the password."""
    def error(password: str) -> str:
        with pytest.raises(ConfigError) as caught:
            from_options("o", {k: v.format(pw=password) for k, v in template.items()})
        return str(caught.value)

    # A password that is a word of the message anyway ("exchan" in the list of
    # options) proves nothing either way.
    assume(pw not in error("0" * 6))
    assert pw not in error(pw)
