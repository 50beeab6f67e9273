"""The control server, inside the supervisor's loop: it never blocks it.

Every socket is non-blocking, a reply is queued and written as the client takes it
(write-readiness), a request has MAX_REQUEST bytes and REQUEST_TIMEOUT seconds, a reply
REPLY_TIMEOUT seconds to be taken, at most MAX_CLIENTS are connected, and running out of file
descriptors sheds the connection it cannot take instead of waking the loop for it again and
again. The server and the requests it is still answering can be handed over to the next image
of the process (export/adopt, for a re-exec). Two sockets are served: control.sock (every
command, for root and the service's user) and status.sock (status only, for everyone the
runtime directory lets in).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any

from swarmd.control.base import ControlError, socket_path, status_socket_path
from swarmd.control.listen import (
    Access,
    listen,
    open_spare,
    peer_access,
    refuse,
)
from swarmd.loop.poller import EPOLLIN, EPOLLOUT, Poller

if TYPE_CHECKING:
    from swarmd.loop.timers import Timer, Timers

# json is imported where a request is read or written, not at start: a supervisor that is never
# asked anything never loads it (one module less in every node's fork, ~1 ms less per start)
MAX_REQUEST = 4096  # bytes of a request line
MAX_CLIENTS = 32  # connections at once; past it the oldest still sending its request goes
REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request line
REPLY_TIMEOUT = 10.0  # seconds a client has to take its whole reply
ACCEPT_PAUSE = 0.5  # seconds the socket rests when accept() fails for want of memory or fds
MAX_COMMAND = 64  # characters of a command name
EXPORT_VERSION = 1


class Reply:
    """Sends the answer to one client's request (once); `fd` names the client across a
    re-exec, so that the new image knows which adopted request is which."""

    __slots__ = ("_server", "_client")

    def __init__(self, server: ControlServer, client: _Client) -> None:
        self._server = server
        self._client = client

    @property
    def fd(self) -> int:
        return self._client.fd

    def __call__(self, reply: dict[str, Any]) -> None:
        self._server._answer(self._client, reply)


Handler = Callable[[dict[str, Any], Reply], None]


class Phase(Enum):
    READING = "reading"  # the request line is arriving
    WAITING = "waiting"  # the handler has the request; its reply has not come yet
    WRITING = "writing"  # the reply is queued and goes out as the client takes it


class _Client:
    __slots__ = ("sock", "fd", "phase", "data", "request", "timer", "read_eof", "closed",
                 "access")

    def __init__(self, sock: socket.socket, phase: Phase = Phase.READING,
                 data: bytes = b"", access: Access = Access.FULL) -> None:
        self.sock = sock
        self.access = access
        self.fd = sock.fileno()
        self.phase = phase
        self.data = data  # READING: the request so far; WRITING: what is left of the reply
        self.request: dict[str, Any] | None = None
        self.timer: Timer | None = None
        self.read_eof = False  # the client shut its side down after its request
        self.closed = False


def parse_request(line: bytes) -> dict[str, Any] | str:
    """The request of one line, or why it is not one (never raises: any bytes may arrive)."""
    import json

    try:
        request = json.loads(line)
    except RecursionError:  # "[[[[..." deeper than the interpreter's stack
        return "bad request: nested too deeply"
    except ValueError as exc:  # not JSON, not UTF-8
        return f"bad request: {exc}"
    if not isinstance(request, dict):
        return "bad request: expected a JSON object like {\"command\": \"status\"}"
    command = request.get("command")
    if not isinstance(command, str) or not 0 < len(command) <= MAX_COMMAND:
        return "bad request: expected \"command\" to name a command, like \"status\""
    return request


class ControlServer:
    """Accepts requests inside the supervisor's loop; never blocks it."""

    def __init__(self, directory: str, handler: Handler) -> None:
        self.path = socket_path(directory)
        self._setup(listen(directory, self.path), handler)

    def _setup(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.status_path = status_socket_path(os.path.dirname(self.path))
        self.status_sock: socket.socket | None = None
        self.handler = handler
        self.clients: dict[int, _Client] = {}
        self._spare = open_spare()
        self._poller: Poller | None = None
        self._timers: Timers | None = None
        self._clock: Callable[[], float] = time.monotonic
        self._resting: set[int] = set()  # listening fds paused after a failed accept()

    def open_status(self) -> None:
        """The read-only status.sock beside control.sock (OSError when it cannot be: the
        caller warns, control.sock serves on). Mode 0666: whom it answers is decided by the
        runtime directory's mode, which systemd sets from outside the unit's user namespace."""
        if self.status_sock is not None:
            return
        self.status_sock = listen(os.path.dirname(self.status_path), self.status_path, 0o666)
        if self._poller is not None:
            self._poller.register(self.status_sock, partial(self._accept, False))

    def _listeners(self) -> list[socket.socket]:
        return [self.sock] if self.status_sock is None else [self.sock, self.status_sock]

    # ---- hand-over across exec -----------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """The state for the next image of this process (a re-exec): the listening socket and
        every client stay open across exec (their fds are made inheritable), and the returned
        JSON-able dict, given to adopt() there, names them. The server keeps working until the
        exec; if the exec fails, cancel_export() makes them private again."""
        clients = []
        for client in self.clients.values():
            os.set_inheritable(client.fd, True)
            entry: dict[str, Any] = {"fd": client.fd, "phase": client.phase.value,
                                     "access": client.access.value}
            if client.phase is Phase.WAITING:
                entry["request"] = client.request
                entry["read_eof"] = client.read_eof
            else:
                entry["data"] = client.data.decode("latin-1")  # bytes, 1:1 in JSON
            clients.append(entry)
        for listener in self._listeners():
            os.set_inheritable(listener.fileno(), True)
        status = None if self.status_sock is None else self.status_sock.fileno()
        return {"version": EXPORT_VERSION, "path": self.path, "listen": self.sock.fileno(),
                "status_listen": status, "clients": clients}

    def cancel_export(self) -> None:
        for fd in (*(listener.fileno() for listener in self._listeners()), *self.clients):
            os.set_inheritable(fd, False)

    @classmethod
    def adopt(cls, state: dict[str, Any], handler: Handler) -> ControlServer:
        """The server export() described, in the new image of the process: the same socket,
        the same clients. A request that was waiting for its reply is not handed to `handler`
        again (a reload must not start twice): take them with adopted_requests() and answer."""
        try:
            if state.get("version") != EXPORT_VERSION:
                raise ValueError(f"export version {state.get('version')!r}")
            sock = _take_listener(state["listen"], state["path"])
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ControlError(f"cannot take over the control socket: {exc}") from None
        server = cls.__new__(cls)
        server.path = state["path"]
        server._setup(sock, handler)
        if state.get("status_listen") is not None:
            # lost (not one of ours): open_status() makes a new one
            with contextlib.suppress(TypeError, ValueError, OSError):
                server.status_sock = _take_listener(state["status_listen"], server.status_path)
        for entry in state.get("clients", []):
            try:
                conn = socket.socket(fileno=int(entry["fd"]))
            except (KeyError, TypeError, ValueError, OSError):
                continue  # gone with the old image: nothing to answer
            try:
                phase = Phase(entry["phase"])
                client = _Client(conn, phase, str(entry.get("data", "")).encode("latin-1"),
                                 Access(entry.get("access", Access.FULL.value)))
                if phase is Phase.WAITING:
                    client.request = dict(entry["request"])
                    client.read_eof = bool(entry.get("read_eof"))
            except (KeyError, TypeError, ValueError):
                conn.close()  # ours, but unreadable state: the client sees EOF, not a hang
                continue
            conn.set_inheritable(False)
            conn.setblocking(False)
            server.clients[client.fd] = client
        return server

    def adopted_requests(self) -> list[tuple[dict[str, Any], Reply]]:
        """Every request still waiting for its reply, with the function that sends it."""
        return [(client.request, Reply(self, client))
                for client in self.clients.values()
                if client.phase is Phase.WAITING and client.request is not None]

    # ---- the loop's side -----------------------------------------------------------------

    def fds(self) -> list[int]:
        spare = [] if self._spare is None else [self._spare]
        return [*(listener.fileno() for listener in self._listeners()), *spare, *self.clients]

    def register(self, poller: Poller, timers: Timers | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Join the loop. With `timers`, a client that takes too long to ask or to take its
        reply is dropped, and a failing accept() rests the socket; without, clients are only
        capped in number."""
        self._poller, self._timers, self._clock = poller, timers, clock
        for listener in self._listeners():
            poller.register(listener, partial(self._accept, listener is self.sock))
        for client in self.clients.values():  # adopted ones
            events = {Phase.READING: EPOLLIN, Phase.WRITING: EPOLLOUT,
                      Phase.WAITING: 0 if client.read_eof else EPOLLIN}[client.phase]
            poller.register(client.sock, partial(self._on_client, client), events)
            if client.phase is Phase.READING:
                self._arm(client, REQUEST_TIMEOUT)
            elif client.phase is Phase.WRITING:
                self._arm(client, REPLY_TIMEOUT)

    def _accept(self, control: bool) -> None:
        """Connections waiting on control.sock (`control`) or status.sock."""
        listener = self.sock if control else self.status_sock
        assert listener is not None
        for _ in range(16):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up while waiting
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._shed(listener)
                else:  # ENOBUFS, ENOMEM: nothing to do but wait
                    self._rest(listener)
                return
            self._admit(conn, control)

    def _admit(self, conn: socket.socket, control: bool) -> None:
        conn.setblocking(False)
        try:
            access = peer_access(conn) if control else Access.READ
        except OSError:
            access = Access.READ
        if len(self.clients) >= MAX_CLIENTS and not self._evict():
            refuse(conn, f"too many control clients at once ({MAX_CLIENTS}); try again")
            return
        client = _Client(conn, access=access)
        self.clients[client.fd] = client
        assert self._poller is not None
        self._poller.register(conn, partial(self._on_client, client))
        self._arm(client, REQUEST_TIMEOUT)

    def _evict(self) -> bool:
        """Make room: the oldest client still sending its request goes (dicts keep order)."""
        for client in self.clients.values():
            if client.phase is Phase.READING:
                self._close(client)
                return True
        return False

    def _shed(self, listener: socket.socket) -> None:
        """accept() found no free fd: take the waiting connection with the spare fd's number
        and close it at once, so it stops waking the loop; rest if there is no spare."""
        if self._spare is None:
            self._rest(listener)
            return
        os.close(self._spare)
        self._spare = None
        try:
            conn, _ = listener.accept()
        except OSError:
            pass
        else:
            refuse(conn, "the supervisor is out of file descriptors; try again")
        self._spare = open_spare()
        if self._spare is None:
            self._rest(listener)

    def _rest(self, listener: socket.socket) -> None:
        fd = listener.fileno()
        if self._timers is None or self._poller is None or fd in self._resting:
            return
        self._resting.add(fd)
        self._poller.pause(listener)
        self._timers.call_at(self._clock() + ACCEPT_PAUSE, partial(self._wake, listener))

    def _wake(self, listener: socket.socket) -> None:
        self._resting.discard(listener.fileno())
        if self._poller is not None and listener.fileno() >= 0:
            if self._spare is None:
                self._spare = open_spare()
            self._poller.resume(listener)

    def _on_client(self, client: _Client) -> None:
        if client.closed:
            return
        if client.phase is Phase.WRITING:
            self._flush(client)
            return
        if client.read_eof:  # nothing asked for, so the peer hung up for good
            self._close(client)
            return
        try:
            data = client.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        if client.phase is Phase.WAITING:
            if data:  # nothing may follow the request line
                self._close(client)
            else:  # shut down its side after asking (socat, nc -N): the reply still goes
                client.read_eof = True
                assert self._poller is not None
                self._poller.modify(client.sock, 0)
            return
        if not data:
            if not client.data.strip():
                self._close(client)
                return
            data = b"\n"  # the request without its newline, then EOF: still a request
            client.read_eof = True
        buffer = client.data + data
        end = buffer.find(b"\n")
        if end < 0 or end > MAX_REQUEST:
            if len(buffer) >= MAX_REQUEST:
                self._answer(client, {"ok": False, "error": f"request longer than "
                                                            f"{MAX_REQUEST} bytes"})
            else:
                client.data = buffer
            return
        client.data = b""
        request = parse_request(buffer[:end])
        if isinstance(request, str):
            self._answer(client, {"ok": False, "error": request})
            return
        if client.access is not Access.FULL and request.get("command") != "status":
            self._answer(client, {"ok": False, "error": "permission denied: only root or the "
                                                        "service's user may change the fleet "
                                                        "(others may ask for status)"})
            return
        client.phase = Phase.WAITING
        client.request = request
        self._disarm(client)
        if client.read_eof:
            assert self._poller is not None
            self._poller.modify(client.sock, 0)
        self.handler(request, Reply(self, client))

    def _answer(self, client: _Client, reply: dict[str, Any]) -> None:
        """Queue the reply and write what the client takes now; the rest on write-readiness.
        A second reply, or one for a client that is gone, is dropped."""
        if client.closed or client.phase is Phase.WRITING:
            return
        import json

        try:
            data = json.dumps(reply).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            data = json.dumps({"ok": False, "error": f"unwritable reply: {exc}"}).encode() + b"\n"
        client.phase = Phase.WRITING
        client.data = data
        self._arm(client, REPLY_TIMEOUT)
        self._flush(client)
        if not client.closed and self._poller is not None:
            self._poller.modify(client.sock, EPOLLOUT)

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the client is gone (EPIPE, ECONNRESET)
            self._close(client)
            return
        client.data = client.data[sent:]
        if not client.data:
            self._close(client)

    def _arm(self, client: _Client, seconds: float) -> None:
        self._disarm(client)
        if self._timers is not None:
            client.timer = self._timers.call_at(self._clock() + seconds,
                                                partial(self._expire, client))

    def _disarm(self, client: _Client) -> None:
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None

    def _expire(self, client: _Client) -> None:
        client.timer = None
        if client.phase is Phase.READING:  # one short line to say why; it fits the buffer
            self._answer(client, {"ok": False, "error": f"no request line within "
                                                        f"{REQUEST_TIMEOUT:g}s"})
            if not client.closed:
                self._close(client)
        else:
            self._close(client)

    def _close(self, client: _Client) -> None:
        if client.closed:
            return
        client.closed = True
        self._disarm(client)
        if self.clients.get(client.fd) is client:
            del self.clients[client.fd]
        if self._poller is not None:
            self._poller.unregister(client.sock)
        client.sock.close()
        client.data = b""

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._close(client)
        for listener in self._listeners():
            if self._poller is not None:
                self._poller.unregister(listener)
            listener.close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        for path in (self.path, self.status_path):
            with contextlib.suppress(OSError):
                os.unlink(path)




def _take_listener(fd: object, path: str) -> socket.socket:
    """The listening socket at `path` an earlier image of the process left open as `fd`."""
    sock = socket.socket(fileno=int(fd))  # type: ignore[call-overload]
    if sock.family != socket.AF_UNIX or sock.getsockname() != path:
        sock.detach()
        raise ValueError(f"fd {fd} is not {path}")
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock
