"""GET /metrics from the supervisor's epoll loop, never blocking it.

Every socket is non-blocking and level-triggered in the loop's Poller: a client is read while it
sends its request (at most MAX_REQUEST bytes), then written while its socket has room, then
held a moment for its close (closing with its bytes unread would reset the connection and could
cut the answer short). A scraper that stops reading leaves its socket unwritable, which costs
the loop nothing; the idle timeout then drops it. At most `max_clients` at once: one more is
answered 503 and closed. EMFILE at accept pauses accepting for a moment instead of spinning.
The answer is rendered once per RENDER_REUSE seconds at most, however many scrapers ask.
HTTP/1.1 with Connection: close, so each scrape is one connection and one answer.
"""

from __future__ import annotations

import enum
import errno
import os
import socket
import stat
from collections.abc import Callable
from functools import partial

from swarmd.loop.poller import READ, WRITE, Poller
from swarmd.loop.timers import Timer, Timers
from swarmd.metrics.address import Address, parse_address
from swarmd.metrics.exposition import CONTENT_TYPE

MAX_REQUEST = 8192  # a request line and headers; a scraper's are a few hundred bytes
MAX_CLIENTS = 32
IDLE_TIMEOUT = 5.0  # seconds without a byte moving either way
CLIENT_DEADLINE = 30.0  # seconds from accept to close, however slowly it trickles
LINGER = 1.0  # seconds to wait for the client's close after the answer
ACCEPT_BATCH = 16  # accepts per wake-up: other fds get their turn
ACCEPT_PAUSE = 0.25  # seconds without accepting after EMFILE and the like
RENDER_REUSE = 0.5  # seconds an answer is served again instead of rendered again
BACKLOG = 64
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

class EndpointError(Exception):
    """The endpoint cannot listen; the message names the address and what to do."""


class _State(enum.Enum):
    READING = "reading"
    WRITING = "writing"
    CLOSING = "closing"  # answered; waiting for the client's close
    CLOSED = "closed"


class _Client:
    __slots__ = ("sock", "fd", "state", "request", "answer", "sent", "drained", "accepted",
                 "moved", "timer")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = _State.READING
        self.request = bytearray()
        self.answer = memoryview(b"")
        self.sent = 0
        self.drained = 0  # bytes dropped after the answer
        self.accepted = now
        self.moved = now  # last time a byte moved
        self.timer: Timer | None = None


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              extra: str = "", head_only: bool = False) -> bytes:
    header = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
              f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode()
    return header if head_only else header + body


_BUSY = _response("503 Service Unavailable", b"too many scrapers at once\n",
                  extra="Retry-After: 1\r\n")


class MetricsEndpoint:
    def __init__(self, address: Address | str, render: Callable[[], bytes], poller: Poller,
                 timers: Timers, clock: Callable[[], float], *,
                 sock: socket.socket | None = None, max_clients: int = MAX_CLIENTS,
                 idle_timeout: float = IDLE_TIMEOUT, deadline: float = CLIENT_DEADLINE,
                 linger: float = LINGER, render_reuse: float = RENDER_REUSE,
                 on_error: Callable[[str], None] | None = None) -> None:
        """Listen on `address` (or adopt `sock`, a listening socket handed over) and serve
        from `poller`; raises EndpointError when it cannot listen."""
        self.address = parse_address(address) if isinstance(address, str) else address
        self._render = render
        self._poller = poller
        self._timers = timers
        self._clock = clock
        self._max_clients = max_clients
        self._idle = idle_timeout
        self._deadline = deadline
        self._linger = linger
        self._reuse = render_reuse
        self._on_error = on_error
        self._clients: dict[int, _Client] = {}
        self._cache: tuple[float, bytes] | None = None
        self._resume: Timer | None = None
        self.served = 0  # 200 answers
        self.refused = 0  # clients beyond max_clients
        self.accept_errors = 0  # EMFILE and the like
        self._sock = sock if sock is not None else self._listen(self.address)
        self._sock.setblocking(False)
        if self.address.family != socket.AF_UNIX:  # port 0 asks the kernel for one
            bound = self._sock.getsockname()
            self.address = Address(self.address.family, self.address.host, bound[1])
        poller.register(self._sock, self._accept)

    @staticmethod
    def _listen(address: Address) -> socket.socket:
        sock = socket.socket(address.family, socket.SOCK_STREAM)
        try:
            if address.family == socket.AF_UNIX:
                _remove_stale_socket(address.host)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address.sockaddr)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            hint = {errno.EADDRINUSE: "another process listens there; pick another port or "
                                      "stop it",
                    errno.EACCES: "not allowed here (a port below 1024, or the directory)",
                    errno.EADDRNOTAVAIL: "no interface of this host has that address"}
            raise EndpointError(f"metrics.listen {address}: cannot listen: {exc.strerror}"
                                + (f"; {hint[exc.errno]}" if exc.errno in hint else "")
                                ) from None
        except EndpointError:
            sock.close()
            raise
        return sock

    # ---- the loop's callbacks ------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self.accept_errors += 1
                    self._pause_accepting()
                    return
                continue  # ECONNABORTED and the like: that client is gone, not the listener
            conn.setblocking(False)
            if len(self._clients) >= self._max_clients:
                self.refused += 1
                try:
                    conn.send(_BUSY)
                except OSError:
                    pass
                conn.close()
                continue
            now = self._clock()
            client = _Client(conn, now)
            self._clients[client.fd] = client
            self._poller.register(conn, partial(self._ready, client))
            client.timer = self._timers.call_at(now + self._idle, partial(self._check, client))

    def _pause_accepting(self) -> None:
        """Out of fds: the pending connection stays in the backlog, and a level-triggered
        listener would wake the loop at once again; look again in a moment."""
        if self._resume is None:
            self._poller.pause(self._sock)
            self._resume = self._timers.call_at(self._clock() + ACCEPT_PAUSE,
                                                self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._resume = None
        self._poller.resume(self._sock)

    def _ready(self, client: _Client) -> None:
        if client.state is _State.READING:
            self._read(client)
        elif client.state is _State.WRITING:
            self._write(client)
        elif client.state is _State.CLOSING:
            self._drain(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST + 1 - len(client.request))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        if not data:  # gone before the request was complete
            self._close(client)
            return
        client.moved = self._clock()
        client.request += data
        end = client.request.find(b"\r\n\r\n")
        if end < 0:
            end = client.request.find(b"\n\n")
        if end >= 0:
            self._answer(client, self._respond(bytes(client.request[:end])))
        elif len(client.request) > MAX_REQUEST:
            self._answer(client, _response("431 Request Header Fields Too Large",
                                           f"a request has at most {MAX_REQUEST} bytes\n"
                                           .encode()))

    def _respond(self, head: bytes) -> bytes:
        parts = head.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _response("400 Bad Request", b"expected an HTTP/1.x request line\n")
        method, target, _ = parts
        path = target.split(b"?", 1)[0]
        if path != b"/metrics":
            return _response("404 Not Found", b"swarmd serves /metrics only\n")
        if method not in (b"GET", b"HEAD"):
            return _response("405 Method Not Allowed", b"GET or HEAD\n",
                             extra="Allow: GET, HEAD\r\n")
        body = self._exposition()
        if body is None:
            return _response("500 Internal Server Error", b"rendering the metrics failed; "
                                                          b"see the journal\n")
        self.served += 1
        return _response("200 OK", body, CONTENT_TYPE, head_only=method == b"HEAD")

    def _exposition(self) -> bytes | None:
        now = self._clock()
        if self._cache is not None and now - self._cache[0] < self._reuse:
            return self._cache[1]
        try:
            body = self._render()
        except Exception as exc:  # a bug in rendering must not end the supervisor
            if self._on_error is not None:
                self._on_error(f"rendering the metrics failed: {exc!r}")
            return None
        self._cache = (now, body)
        return body

    def _answer(self, client: _Client, answer: bytes) -> None:
        client.state = _State.WRITING
        client.request = bytearray()
        client.answer = memoryview(answer)
        self._write(client)  # most answers fit the socket's buffer: no second wake-up
        if client.state is _State.WRITING:
            self._poller.modify(client.sock, WRITE)

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.answer[client.sent:])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset or gone
            self._close(client)
            return
        client.sent += sent
        client.moved = self._clock()
        if client.sent < len(client.answer):
            return
        client.answer = memoryview(b"")
        try:
            client.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(client)
            return
        client.state = _State.CLOSING
        self._poller.modify(client.sock, READ)
        if client.timer is not None:
            client.timer.cancel()
        client.timer = self._timers.call_at(client.moved + self._linger,
                                            partial(self._check, client))

    def _drain(self, client: _Client) -> None:
        """After the answer: wait for the client's close, dropping what it still sends."""
        try:
            data = client.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        client.drained += len(data)
        if not data or client.drained > MAX_REQUEST:
            self._close(client)

    def _check(self, client: _Client) -> None:
        """A client's timer: close it if nothing moved for too long, else look again later."""
        if client.fd not in self._clients or self._clients[client.fd] is not client:
            return
        now = self._clock()
        wait = self._linger if client.state is _State.CLOSING else self._idle
        due = min(client.moved + wait, client.accepted + self._deadline)
        if now >= due:
            self._close(client)
        else:
            client.timer = self._timers.call_at(due, partial(self._check, client))

    def _close(self, client: _Client) -> None:
        client.state = _State.CLOSED
        if self._clients.get(client.fd) is client:
            del self._clients[client.fd]
            self._poller.unregister(client.sock)
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        client.sock.close()

    # ---- for the owner ---------------------------------------------------------------------

    @property
    def clients(self) -> int:
        return len(self._clients)

    def fileno(self) -> int:
        return self._sock.fileno()

    def fds(self) -> list[int]:
        """Every fd it holds (all are in the poller too; a forked node closes them)."""
        return [self._sock.fileno(), *self._clients]

    def hand_over(self) -> int:
        """The listening socket's fd, made inheritable: a deploy's re-exec keeps it, so the
        address is never free (connections wait in its backlog meanwhile)."""
        self._sock.set_inheritable(True)
        return self._sock.fileno()

    def close(self) -> None:
        """Stop listening and drop every client (a unix socket's file is removed)."""
        for client in list(self._clients.values()):
            self._close(client)
        if self._resume is not None:
            self._resume.cancel()
        self._poller.unregister(self._sock)
        self._sock.close()
        if self.address.family == socket.AF_UNIX:
            try:
                os.unlink(self.address.host)
            except OSError:
                pass


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a process that is gone is removed; a live one, or a file that is
    not a socket, is refused rather than stolen or destroyed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise EndpointError(f"metrics.listen unix:{path}: a file that is not a socket is in "
                            f"the way; remove it or choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody listens: left over from an earlier run
        return
    except BlockingIOError:
        pass  # a live listener with a full backlog
    except OSError as exc:
        raise EndpointError(f"metrics.listen unix:{path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise EndpointError(f"metrics.listen unix:{path}: another process listens there; stop it "
                        f"or choose another path")
