"""The control socket: a server in the supervisor's loop, a client for status/reload/quiet.

One JSON request line per connection, one JSON reply line. The socket lives in the runtime
directory with mode 0600 and only answers peers with the supervisor's uid or root
(SO_PEERCRED), since `reload` and `quiet` change what the service does. base: where the socket
is; listen: the listening socket; server: the loop's side; client: `swarmd status/reload/quiet`.
"""

from swarmd.control.base import SOCKET_NAME, ControlError, runtime_dir, socket_path
from swarmd.control.client import request
from swarmd.control.server import ControlServer, Handler, Phase, Reply, parse_request

__all__ = ["SOCKET_NAME", "ControlError", "ControlServer", "Handler", "Phase", "Reply",
           "parse_request", "request", "runtime_dir", "socket_path"]
