"""`metrics.listen`: "127.0.0.1:9105", "[::1]:9105", "0.0.0.0:9105", "[::]:9105" or
"unix:/run/swarmd/metrics.sock". Literal addresses only: a host name would need a DNS lookup at
every start, which can hang, and a metrics port belongs on a known interface."""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple

MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class Address(NamedTuple):
    family: int  # socket.AF_INET, AF_INET6 or AF_UNIX
    host: str  # the IP address, or the socket's path for AF_UNIX
    port: int = 0

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"unix:{self.host}"
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def sockaddr(self) -> str | tuple[str, int]:
        return self.host if self.family == socket.AF_UNIX else (self.host, self.port)


def parse_address(text: object) -> Address:
    """Raises ValueError saying what a valid address looks like."""
    example = 'like "127.0.0.1:9105", "[::1]:9105" or "unix:/run/swarmd/metrics.sock"'
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected an address {example}, got {text!r}")
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/"):
            raise ValueError(f"a unix socket needs an absolute path, got {path!r}")
        if len(path.encode()) > MAX_UNIX_PATH:
            raise ValueError(f"a unix socket path has at most {MAX_UNIX_PATH} bytes, "
                             f"{path!r} has {len(path.encode())}")
        if "\0" in path:
            raise ValueError("a unix socket path cannot hold a NUL byte")
        return Address(socket.AF_UNIX, path)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT {example}, got {text!r}")
    # 0: the kernel picks a free port, which `swarmd status --json` tells (metrics.listen)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"the port must be a number from 0 to 65535, got {port_text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        family = socket.AF_INET6
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif host == "localhost":
        host, family = "127.0.0.1", socket.AF_INET
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            hint = " (an IPv6 address goes in brackets: [::1]:9105)" if ":" in host else ""
            raise ValueError(f"{host!r} is not an IP address{hint}; give one {example} "
                             f"(0.0.0.0 or [::] for every interface)") from None
        family = socket.AF_INET
    return Address(family, host, int(port_text))
