"""Why the cage does not answer a client, from what its connection saw. Pure.

A CURVE mistake makes ZeroMQ fail the handshake and retry it forever: the
client sees no error, only silence, unless it watches its socket's monitor.
The shell's transport (:class:`zdse.node.transport.Transport`) turns each
monitor event into a :class:`Seen`, the :class:`~zdse.node.bus.Bus` keeps
what :func:`after` says; :func:`explain` says what
it means, for ``node.waiting`` and for the error at the end of a connect
timeout; :func:`unreachable` says why one of several cages cannot be asked
now (zdse-web's cages panel).
Only :attr:`Seen.REFUSED` is final (the cage does not know the key): the
rest may be mended on the cage's side while the client keeps trying.
"""

from __future__ import annotations

from enum import Enum

from zdse.node.session import SessionState

__all__ = ["KEY_FLAGS", "Seen", "after", "explain", "unreachable"]

#: How a zdse command line is given its CURVE keys.
KEY_FLAGS = "--curve-key and --cage-key, or ZDSE_CURVE_KEY and ZDSE_CAGE_KEY"


class Seen(Enum):
    """The last thing the client's connection to the cage went through."""

    #: A connection (TCP or ipc) was made; the handshake has not ended yet.
    CONNECTED = "connected"
    #: The handshake succeeded: the cage should answer the registration.
    HANDSHAKE_OK = "handshake ok"
    #: One side uses CURVE and the other does not.
    MECHANISM_MISMATCH = "mechanism mismatch"
    #: The cage's authenticator refused this client's key.
    REFUSED = "refused"
    #: The peer dropped the handshake, or broke the protocol, without saying why.
    HANDSHAKE_FAILED = "handshake failed"


#: How much each failure tells. A retried handshake that fails over a
#: mechanism mismatch is reported as a mismatch by one side and as a
#: dropped connection by the other, whichever notices first: a later,
#: vaguer failure must not hide what an earlier one made plain.
_TELLS = {Seen.CONNECTED: 0, Seen.HANDSHAKE_FAILED: 1, Seen.MECHANISM_MISMATCH: 2,
          Seen.REFUSED: 3}


def after(previous: Seen | None, seen: Seen) -> Seen:
    """What to keep once ``seen`` follows ``previous``: a success starts afresh; after a
    failure, the most telling failure since the last success."""
    if previous is None or previous is Seen.HANDSHAKE_OK or seen is Seen.HANDSHAKE_OK:
        return seen
    return seen if _TELLS[seen] >= _TELLS[previous] else previous


def explain(seen: Seen | None, router: str, curve: bool) -> str:
    """Why the cage at ``router`` has not answered, as one clause.

    Args:
        seen: the last thing the connection went through (None: nothing yet).
        router: the cage's ROUTER endpoint.
        curve: whether this client uses CURVE.
    """
    if seen is None:
        return f"nothing accepted a connection at {router} (is zdse-proxy running there?)"
    if seen is Seen.MECHANISM_MISMATCH:
        if curve:
            return (f"the cage at {router} does not use CURVE but this client does, so the "
                    f"handshake failed: leave out {KEY_FLAGS}")
        return (f"the cage at {router} requires CURVE and this client has no key, so the "
                f"handshake failed: give it {KEY_FLAGS}")
    if seen is Seen.REFUSED:
        return f"the cage at {router} refused this node's CURVE key (handshake failed)"
    if seen is Seen.HANDSHAKE_FAILED:
        # The side that notices a mismatch first drops the connection: the
        # other may see only that, so a mismatch stays among the causes.
        if curve:
            return (f"the CURVE handshake with the cage at {router} failed: the cage key "
                    "given (--cage-key, ZDSE_CAGE_KEY) is likely not this cage's public key, "
                    "or the cage does not use CURVE")
        return (f"the handshake with {router} failed: the cage likely requires CURVE "
                f"(give this client {KEY_FLAGS}), or what listens there is not zdse-proxy")
    if seen is Seen.CONNECTED and curve:
        return (f"connected to {router}, but the CURVE handshake has not finished: a CURVE "
                "mistake (the wrong --cage-key) is the likely cause")
    return f"connected to {router}, but the cage has not answered yet (is it zdse-proxy?)"


def unreachable(state: SessionState, closed: bool, seen: Seen | None, router: str,
                curve: bool, expiry: float) -> str:
    """Why the cage at ``router`` cannot be asked now, as one clause ('' if it can).

    Args:
        state: the node's session with that cage.
        closed: its connection closed (the kernel said so) and it has not
            answered a heartbeat since.
        seen: the last thing the connection went through.
        router: the cage's ROUTER endpoint.
        curve: whether this client uses CURVE.
        expiry: seconds of silence after which a cage is taken for lost.
    """
    if closed:
        return f"the connection to {router} closed (is zdse-proxy running there?)"
    if state is SessionState.REGISTERED:
        return ""
    if state is SessionState.LOST:
        return f"no word from the cage at {router} for {expiry:g}s"
    if state is SessionState.REFUSED:
        return f"the cage at {router} refused this client"
    if state is SessionState.JOINING:
        return f"the cage at {router} welcomed this client; its PUB has not answered yet"
    return explain(seen, router, curve)
