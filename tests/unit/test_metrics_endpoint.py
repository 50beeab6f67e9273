"""MetricsEndpoint with real sockets, in-process: the test drives the Poller and the Timers
the way the supervisor's loop does, and plays every kind of client, including the ones that
never read, never finish or never come back."""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from swarmd.loop.poller import Poller
from swarmd.loop.timers import Timers
from swarmd.metrics import endpoint as endpoint_module
from swarmd.metrics.address import Address
from swarmd.metrics.endpoint import EndpointError, MetricsEndpoint

LOCAL = Address(socket.AF_INET, "127.0.0.1", 0)
BODY = b"# HELP up x\n# TYPE up gauge\nup 1\n"
GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"


class Loop:
    """The supervisor's loop in miniature: poll, then the due timers."""

    def __init__(self) -> None:
        self.poller = Poller()
        self.timers = Timers()
        self.renders = 0
        self.body = BODY
        self.errors: list[str] = []
        self.skew = 0.0  # added to the clock: a test moves time forward without waiting

    def clock(self) -> float:
        return time.monotonic() + self.skew

    def render(self) -> bytes:
        self.renders += 1
        return self.body

    def serve(self, address: Address | str = LOCAL, **options: object) -> MetricsEndpoint:
        return MetricsEndpoint(address, self.render, self.poller, self.timers, self.clock,
                               on_error=self.errors.append, **options)  # type: ignore[arg-type]

    def turn(self, timeout: float = 0.01) -> int:
        ready = self.poller.poll(timeout)
        self.timers.run_due(self.clock())
        return ready

    def until(self, predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.turn()


@pytest.fixture
def loop() -> Iterator[Loop]:
    made = Loop()
    yield made
    made.poller.close()


def connect(endpoint: MetricsEndpoint) -> socket.socket:
    client = socket.create_connection(endpoint.address.sockaddr, timeout=5)  # type: ignore
    client.setblocking(False)
    return client


def receive(loop: Loop, client: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes, driving the loop meanwhile."""
    chunks: list[bytes] = []
    done: list[bool] = []

    def read() -> bool:
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    done.append(True)
                    return True
                chunks.append(data)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            done.append(True)
            return True

    loop.until(read, "the server's answer and close", timeout)
    client.close()
    return b"".join(chunks)


def ask(loop: Loop, endpoint: MetricsEndpoint, request: bytes = GET) -> bytes:
    client = connect(endpoint)
    client.sendall(request)
    return receive(loop, client)


def test_get_metrics_answers_the_exposition(loop: Loop) -> None:
    endpoint = loop.serve()
    answer = ask(loop, endpoint)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 200 OK", b"Content-Type: text/plain; version=0.0.4; charset=utf-8",
        f"Content-Length: {len(BODY)}".encode(), b"Connection: close"]
    assert body == BODY
    assert endpoint.served == 1
    loop.until(lambda: endpoint.clients == 0, "the server to see the client's close")
    assert loop.poller.fds() == [endpoint.fileno()]  # nothing left of the client


def test_a_query_string_and_bare_newlines_are_fine(loop: Loop) -> None:
    endpoint = loop.serve()
    assert ask(loop, endpoint, b"GET /metrics?x=1 HTTP/1.0\n\n").startswith(b"HTTP/1.1 200 OK")


def test_head_answers_without_the_body(loop: Loop) -> None:
    endpoint = loop.serve()
    answer = ask(loop, endpoint, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"\r\n\r\n")
    assert f"Content-Length: {len(BODY)}".encode() in answer


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET / HTTP/1.1\r\n\r\n", b"404 Not Found"),
    (b"GET /metricsx HTTP/1.1\r\n\r\n", b"404 Not Found"),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405 Method Not Allowed"),
    (b"hello\r\n\r\n", b"400 Bad Request"),
    (b"GET /metrics SPDY/3\r\n\r\n", b"400 Bad Request"),
    (b"\x00\xff\r\n\r\n", b"400 Bad Request"),
])
def test_anything_else_is_refused_plainly(loop: Loop, request_bytes: bytes,
                                          status: bytes) -> None:
    endpoint = loop.serve()
    answer = ask(loop, endpoint, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert loop.renders == 0
    if status.startswith(b"405"):
        assert b"Allow: GET, HEAD\r\n" in answer


def test_an_endless_request_is_cut_at_its_bound(loop: Loop) -> None:
    endpoint = loop.serve()
    client = connect(endpoint)
    client.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000)
    answer = receive(loop, client)
    assert answer.startswith(b"HTTP/1.1 431 ")
    loop.until(lambda: endpoint.clients == 0, "the client forgotten")


def test_a_request_in_many_small_pieces_is_served(loop: Loop) -> None:
    endpoint = loop.serve()
    client = connect(endpoint)
    for i in range(len(GET)):
        client.send(GET[i:i + 1])
        loop.turn(0)
    assert receive(loop, client).endswith(BODY)


def test_a_big_answer_goes_out_in_pieces_to_a_slow_reader(loop: Loop) -> None:
    loop.body = b"x" * (8 << 20)
    endpoint = loop.serve()
    client = connect(endpoint)
    client.sendall(GET)
    assert receive(loop, client).endswith(loop.body)
    loop.until(lambda: endpoint.clients == 0, "the client forgotten")


def test_a_stuck_scraper_costs_the_loop_nothing_and_is_dropped(loop: Loop) -> None:
    loop.body = b"x" * (32 << 20)  # far more than the socket buffers hold
    endpoint = loop.serve(idle_timeout=0.3)
    client = connect(endpoint)
    client.sendall(GET)
    quiet: list[int] = []

    def settled() -> bool:  # written until its buffers are full, then nothing is ready
        quiet.append(loop.turn(0))
        return quiet[-3:] == [0, 0, 0]

    loop.until(settled, "the answer to fill the client's buffers")
    assert endpoint.clients == 1
    assert loop.poller.poll(0) == 0  # the stuck client wakes nobody
    loop.until(lambda: endpoint.clients == 0, "the idle timeout to drop the stuck client")
    received = receive(loop, client)
    assert 0 < len(received) < len(loop.body)


def test_a_client_that_never_sends_is_dropped_after_the_idle_timeout(loop: Loop) -> None:
    endpoint = loop.serve(idle_timeout=0.2)
    clients = [connect(endpoint) for _ in range(16)]  # 16 half-open clients
    loop.until(lambda: endpoint.clients == 16, "16 accepted")
    assert ask(loop, endpoint).endswith(BODY)  # others are still served meanwhile
    loop.until(lambda: endpoint.clients == 0, "every half-open client dropped")
    for client in clients:
        assert receive(loop, client) == b""


def test_a_trickling_client_is_dropped_at_the_deadline(loop: Loop) -> None:
    endpoint = loop.serve(idle_timeout=0.2, deadline=0.5)
    client = connect(endpoint)
    loop.until(lambda: endpoint.clients == 1, "accepted")
    start = time.monotonic()
    sent = 0
    while endpoint.clients:  # a byte every turn: never idle, never done
        try:
            client.send(b"X-Header: x\r\n"[sent % 13:sent % 13 + 1])
            sent += 1
        except OSError:
            break
        loop.turn(0.05)
        assert time.monotonic() - start < 5, "never dropped"
    assert sent > 3


def test_beyond_max_clients_one_more_is_answered_busy(loop: Loop) -> None:
    endpoint = loop.serve(max_clients=4)
    held = [connect(endpoint) for _ in range(4)]
    loop.until(lambda: endpoint.clients == 4, "4 accepted")
    extra = connect(endpoint)
    extra.sendall(GET)
    assert receive(loop, extra).startswith(b"HTTP/1.1 503 Service Unavailable")
    assert endpoint.refused == 1 and endpoint.clients == 4
    held[0].sendall(GET)
    assert receive(loop, held[0]).endswith(BODY)
    for client in held[1:]:
        client.close()


def test_a_client_that_resets_mid_answer_is_forgotten(loop: Loop) -> None:
    loop.body = b"x" * (16 << 20)
    endpoint = loop.serve()
    client = connect(endpoint)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.sendall(GET)
    loop.until(lambda: endpoint.clients == 1, "accepted")
    loop.turn(0)
    client.close()  # with linger 0: a reset
    loop.until(lambda: endpoint.clients == 0, "the reset client forgotten")


def test_scrapes_close_together_share_one_render(loop: Loop) -> None:
    endpoint = loop.serve(render_reuse=3600)
    for _ in range(3):
        assert ask(loop, endpoint).endswith(BODY)
    assert loop.renders == 1
    loop.skew += 3600
    ask(loop, endpoint)
    assert loop.renders == 2


def test_a_failing_render_is_a_500_and_an_error(loop: Loop) -> None:
    def broken() -> bytes:
        raise RuntimeError("bug")

    endpoint = MetricsEndpoint(LOCAL, broken, loop.poller, loop.timers, time.monotonic,
                               on_error=loop.errors.append)
    assert ask(loop, endpoint).startswith(b"HTTP/1.1 500 ")
    assert loop.errors == ["rendering the metrics failed: RuntimeError('bug')"]


def test_out_of_fds_at_accept_pauses_accepting_instead_of_spinning(
        loop: Loop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint_module, "ACCEPT_PAUSE", 0.1)
    endpoint = loop.serve()
    client = connect(endpoint)
    client.sendall(GET)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no fd left to accept
    try:
        assert loop.turn(0) == 1  # the accept fails with EMFILE
        assert endpoint.accept_errors == 1
        assert loop.poller.poll(0) == 0  # paused: the pending client does not spin the loop
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert receive(loop, client).endswith(BODY)  # accepted once the pause is over


def test_a_port_in_use_is_a_clear_error(loop: Loop) -> None:
    first = loop.serve()
    with pytest.raises(EndpointError, match=r"metrics.listen 127\.0\.0\.1:\d+: cannot listen: "
                                            r"Address already in use; another process"):
        loop.serve(first.address)


def test_ipv6_loopback(loop: Loop) -> None:
    try:
        endpoint = loop.serve(Address(socket.AF_INET6, "::1", 0))
    except EndpointError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert str(endpoint.address).startswith("[::1]:")
    assert ask(loop, endpoint).endswith(BODY)


def test_a_unix_socket_replaces_a_stale_one_and_is_removed_at_close(
        loop: Loop, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "metrics.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    endpoint = loop.serve(f"unix:{path}")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.setblocking(False)
    client.sendall(GET)
    assert receive(loop, client).endswith(BODY)
    with pytest.raises(EndpointError, match="another process listens there"):
        loop.serve(f"unix:{path}")
    endpoint.close()
    assert not os.path.exists(path)
    assert loop.poller.fds() == []


def test_a_file_in_the_way_of_the_unix_socket_is_left_alone(
        loop: Loop, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "metrics.sock")
    with open(path, "w") as handle:
        handle.write("precious")
    with pytest.raises(EndpointError, match="a file that is not a socket is in the way"):
        loop.serve(f"unix:{path}")
    with open(path) as handle:
        assert handle.read() == "precious"


def test_close_drops_every_client(loop: Loop) -> None:
    endpoint = loop.serve()
    clients = [connect(endpoint) for _ in range(3)]
    loop.until(lambda: endpoint.clients == 3, "3 accepted")
    assert len(endpoint.fds()) == 4
    endpoint.close()
    assert loop.poller.fds() == []
    for client in clients:
        try:
            assert client.recv(10) == b""
        except ConnectionResetError:
            pass
        client.close()


def test_an_adopted_listening_socket_is_served(loop: Loop) -> None:
    """A supervisor handing over to its new code keeps its listening socket."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    endpoint = MetricsEndpoint(Address(socket.AF_INET, "127.0.0.1", port), loop.render,
                               loop.poller, loop.timers, time.monotonic, sock=sock)
    assert ask(loop, endpoint).endswith(BODY)

