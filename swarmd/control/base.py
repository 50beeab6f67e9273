"""What the control socket's server and client share: where the socket is, and the error."""

from __future__ import annotations

import os

SOCKET_NAME = "control.sock"
# Beside it, answering status only: its mode is 0666, so the runtime directory's mode
# (RuntimeDirectoryMode=) decides which other users may read the fleet's status.
STATUS_SOCKET_NAME = "status.sock"


class ControlError(Exception):
    """The running supervisor cannot be reached or refused the request."""


class ControlDenied(ControlError):
    """The file modes keep this user away from the socket."""


def runtime_dir(instance: str | None = None, environ: dict[str, str] | None = None) -> str:
    """$RUNTIME_DIRECTORY (set by systemd), else /run/swarmd or /run/swarmd-<instance>
    ($XDG_RUNTIME_DIR/swarmd for a user who is not root)."""
    env = os.environ if environ is None else environ
    name = f"swarmd-{instance}" if instance else "swarmd"
    value = env.get("RUNTIME_DIRECTORY", "")
    if value and not instance:
        return value.split(":")[0]
    if os.geteuid() != 0 and env.get("XDG_RUNTIME_DIR"):  # a user's foreground run
        return os.path.join(env["XDG_RUNTIME_DIR"], name)
    return f"/run/{name}"


def socket_path(directory: str) -> str:
    return os.path.join(directory, SOCKET_NAME)


def status_socket_path(directory: str) -> str:
    return os.path.join(directory, STATUS_SOCKET_NAME)
