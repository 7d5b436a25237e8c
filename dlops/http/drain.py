"""Graceful shutdown: on SIGTERM, answer every connection already made, refuse new ones.

Heroku sends SIGTERM to every process of a dyno, SIGKILL 30 s later. Stock `bentoml serve`
lost requests then (measured: 2-16 connection resets of 32 busy clients): uvicorn stops
accepting at once, but the listening socket is shared with BentoML's arbiter process, which
closes it only when the workers are gone, so connections the kernel had already completed wait
in its accept queue until that close resets them. And uvicorn closes a connection it has just
accepted if the request has not been read yet.

So each worker takes SIGTERM over from uvicorn: it first makes the shared socket drop new
connection attempts (a socket filter on SYN: the clients' retries then meet a closed port and
are refused; handshakes already under way complete), keeps serving until the kernel's accept
queue is empty and the requests on those connections have begun, and only then lets uvicorn
shut down as usual (finish what is in flight, close idle connections, exit). Meanwhile every
response says ``Connection: close``. Linux only; elsewhere uvicorn's own handling is kept.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

from dlops import config

logger = logging.getLogger(config.LOGGER_NAME)

SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
# A classic BPF program that drops every segment with SYN set, i.e. every new connection attempt,
# and keeps the rest. The rest matters: the client's last packet of a handshake under way when
# the filter goes on also reaches the listening socket, and dropping it (as a filter of "drop
# everything" did) left that connection half-open until the socket closed and reset it, while
# its client already believed it was connected. Loads are relative to the TCP header.
TCP_FLAGS_OFFSET = 13
TCP_SYN = 0x02
DROP_NEW_CONNECTIONS = b"".join(
    struct.pack("=HBBI", code, jump_true, jump_false, k)
    for code, jump_true, jump_false, k in (
        (0x30, 0, 0, TCP_FLAGS_OFFSET),  # BPF_LD | BPF_B | BPF_ABS: the flags byte
        (0x45, 0, 1, TCP_SYN),  # BPF_JMP | BPF_JSET | BPF_K: SYN set? next : skip one
        (0x06, 0, 0, 0),  # BPF_RET | BPF_K: drop
        (0x06, 0, 0, 0xFFFFFFFF),  # BPF_RET | BPF_K: keep the whole segment
    )
)
# For a listening socket, Linux's TCP_INFO holds the accept queue's length in tcpi_unacked.
TCP_INFO_UNACKED_OFFSET = 24
TCP_INFO_SIZE = 104
# Requests on connections accepted during the drain arrive with the connection (the client
# sends them right after connecting), but a busy client may take a while: the drain ends once
# no request has begun for this long, and only then does uvicorn close connections still idle.
QUIET_SECONDS = 0.5
QUEUE_POLL_SECONDS = 0.01


def listening_sockets() -> list[socket.socket]:
    """Duplicates of this process's listening TCP sockets (BentoML passes the worker an fd)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            candidate = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue  # not a socket, or already closed
        if (
            candidate.type == socket.SOCK_STREAM
            and candidate.family in (socket.AF_INET, socket.AF_INET6)
            and candidate.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        ):
            found.append(candidate)
        else:
            candidate.close()
    return found


def stop_new_connections(listener: socket.socket) -> None:
    """Drop connection attempts on a listening socket, keeping those already queued and letting
    handshakes under way complete."""
    program = (ctypes.c_ubyte * len(DROP_NEW_CONNECTIONS)).from_buffer_copy(DROP_NEW_CONNECTIONS)
    instructions = len(DROP_NEW_CONNECTIONS) // 8
    sock_fprog = struct.pack("@HP", instructions, ctypes.addressof(program))  # struct sock_fprog
    listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog)


def accept_queue_length(listener: socket.socket) -> int:
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    return struct.unpack_from("I", info, TCP_INFO_UNACKED_OFFSET)[0]


class GracefulDrain:
    """Outermost ASGI wrapper of the worker's app; see the module's docstring."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.draining = False
        self.last_request_started = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._watch_startup(receive), send)
            return
        if self.draining and scope["type"] == "http":
            self.last_request_started = time.monotonic()
            send = _closing(send)
        await self.app(scope, receive, send)

    def _watch_startup(self, receive: Any) -> Any:
        async def receive_and_watch() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._take_over_sigterm()
            return message

        return receive_and_watch

    def _take_over_sigterm(self) -> None:
        # uvicorn has installed its handlers by the time the app starts; ours runs first and
        # hands the signal on to uvicorn's once the queue is drained.
        if not sys.platform.startswith("linux") or threading.current_thread() is not (
            threading.main_thread()
        ):
            return
        uvicorn_handler = signal.getsignal(signal.SIGTERM)
        if not callable(uvicorn_handler):
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: Any) -> None:
            if self.draining:
                return  # the arbiter relays the same SIGTERM: one drain is enough
            self.draining = True
            loop.call_soon_threadsafe(
                lambda: loop.create_task(self._drain(lambda: uvicorn_handler(signum, frame)))
            )

        signal.signal(signal.SIGTERM, on_sigterm)

    async def _drain(self, shut_down: Any) -> None:
        started = time.monotonic()
        listeners = listening_sockets()
        try:
            for listener in listeners:
                stop_new_connections(listener)
            deadline = started + config.DRAIN_SECONDS
            while time.monotonic() < deadline and (
                any(map(accept_queue_length, listeners))
                or time.monotonic() - max(started, self.last_request_started) < QUIET_SECONDS
            ):
                await asyncio.sleep(QUEUE_POLL_SECONDS)
        except OSError as error:  # a platform without socket filters: uvicorn's way, at once
            logger.warning("draining the accept queue failed (%s); shutting down", error)
        finally:
            for listener in listeners:
                listener.close()
            logger.info(
                "SIGTERM: new connections refused, accept queue drained in %.2f s; "
                "finishing requests in flight",
                time.monotonic() - started,
            )
            shut_down()


def _closing(send: Any) -> Any:
    """``send`` that marks each response ``Connection: close`` (no new request on it)."""

    async def send_and_close(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return send_and_close
