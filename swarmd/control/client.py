"""The control socket's client: `swarmd status`, `reload`, `quiet` ask the running supervisor."""

from __future__ import annotations

import socket
import time
from typing import Any

from swarmd.control.base import (
    STATUS_SOCKET_NAME,
    ControlDenied,
    ControlError,
    socket_path,
    status_socket_path,
)

MAX_REPLY = 64 << 20  # bytes of a reply the client reads


def request(directory: str, payload: dict[str, Any], timeout: float | None = 10.0
            ) -> dict[str, Any]:
    """Send one request to the running supervisor and wait for its reply (None: as long as it
    takes, for a reload); every failure is a ControlError saying what happened."""
    import json

    path = socket_path(directory)
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    data = bytearray()
    try:
        sock.settimeout(timeout)
        try:
            try:
                sock.connect(path)
            except PermissionError:
                if payload.get("command") != "status":
                    raise
                path = status_socket_path(directory)  # the read-only one, for other users
                sock.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no swarmd is running here ({path} does not exist); "
                               f"start it with systemctl start swarmd") from None
        except PermissionError:
            raise ControlDenied(
                f"permission denied on {path}: "
                + ("the runtime directory's mode keeps this user out (the unit's "
                   "RuntimeDirectoryMode=); ask root" if path.endswith(STATUS_SOCKET_NAME)
                   else "only root or the service's user may do this; swarmd status is "
                        "open to other users")) from None
        except ConnectionRefusedError:
            raise ControlError(f"no swarmd is listening on {path} (a stale socket, or it is "
                               f"restarting); check systemctl status swarmd") from None
        except TimeoutError:
            raise ControlError(f"swarmd did not accept the connection within {timeout}s "
                               f"at {path}") from None
        except OSError as exc:
            raise ControlError(f"cannot reach swarmd at {path}: "
                               f"{exc.strerror or exc}") from None
        try:
            sock.sendall(json.dumps(payload).encode() + b"\n")
            while not data.endswith(b"\n"):
                if deadline is not None:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_REPLY:
                    raise ControlError(f"swarmd's answer is longer than {MAX_REPLY} bytes")
        except TimeoutError:
            raise ControlError(f"swarmd did not answer within {timeout}s") from None
        except OSError as exc:  # reset, broken pipe: it stopped, restarted or dropped us
            raise ControlError(f"swarmd closed the connection before answering "
                               f"({exc.strerror or exc}); it may be stopping or restarting: "
                               f"check systemctl status swarmd") from None
    finally:
        sock.close()
    if not data:
        raise ControlError("swarmd closed the connection without an answer; it may be "
                           "stopping or restarting: check systemctl status swarmd")
    if not data.endswith(b"\n"):
        raise ControlError(f"swarmd closed the connection in the middle of its answer "
                           f"({len(data)} bytes)")
    try:
        reply = json.loads(data)
    except (ValueError, RecursionError):
        raise ControlError(f"unreadable answer from swarmd: {bytes(data[:80])!r}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"unexpected answer from swarmd: {bytes(data[:80])!r}")
    return reply
