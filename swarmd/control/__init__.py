"""The control socket: a server in the supervisor's loop, a client for status/reload/quiet.

One JSON request line per connection, one JSON reply line. control.sock lives in the runtime
directory with mode 0600 and only obeys peers with the supervisor's uid or root
(SO_PEERCRED), since `reload` and `quiet` change what the service does; status.sock beside it
answers status to any user the directory lets in. base: where the sockets are; listen: the
listening sockets; server: the loop's side; client: `swarmd status/reload/quiet`.
"""

from swarmd.control.base import (
    SOCKET_NAME,
    STATUS_SOCKET_NAME,
    ControlDenied,
    ControlError,
    runtime_dir,
    socket_path,
    status_socket_path,
)
from swarmd.control.client import request
from swarmd.control.server import ControlServer, Handler, Phase, Reply, parse_request

__all__ = ["SOCKET_NAME", "STATUS_SOCKET_NAME", "ControlDenied", "ControlError",
           "ControlServer", "Handler", "Phase", "Reply", "parse_request", "request",
           "runtime_dir", "socket_path", "status_socket_path"]
