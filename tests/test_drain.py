"""dlops/http/drain.py's socket filter, in-process on a real listening socket (Linux).

test_shutdown.py drives the whole drain over HTTP; these pin what the filter itself does: a new
connection attempt is dropped, while a connection whose handshake was under way when the filter
was attached still completes, and is accepted, instead of being reset when the socket closes.
"""

from __future__ import annotations

import socket
import sys

import pytest

from dlops.http.drain import stop_new_connections

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket filter")


def connect(port: int, timeout: float) -> socket.socket:
    client = socket.socket()
    client.settimeout(timeout)
    client.connect(("127.0.0.1", port))
    return client


def test_a_new_connection_attempt_is_dropped_not_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        stop_new_connections(listener)
        with pytest.raises(TimeoutError):  # the SYN is dropped: no answer, not a reset
            connect(listener.getsockname()[1], timeout=0.5)


def test_a_handshake_under_way_at_the_filter_still_completes() -> None:
    """A client whose connect() has returned may still be half-way in for the server: its last
    packet of the handshake not yet in. TCP_DEFER_ACCEPT holds a connection there until the
    client's first data, which makes the moment reproducible: the filter goes on in between, and
    the connection must still complete and be accepted, not be reset when the socket closes."""
    with socket.socket() as listener:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        with connect(listener.getsockname()[1], timeout=2.0) as client:
            stop_new_connections(listener)
            client.sendall(b"ping")
            listener.settimeout(3.0)
            accepted, _ = listener.accept()
            with accepted:
                accepted.settimeout(2.0)
                assert accepted.recv(4) == b"ping"
