"""`swarmd install` and `swarmd uninstall`: a unit for this venv's swarmd, the journal catalog
and an example config, from the files the package ships (swarmd/share/), the way Debian's
packages install a service; and taking back exactly what it wrote.

The unit is the shipped swarmd.service (its whole sandbox) with ExecStart/ExecReload pointing
at this venv's `bin/swarmd` and the fleet's config; a name other than `swarmd` gets its own
runtime directory (`swarmd status -i NAME` finds it) and SWARMD_FLEET=NAME on its entries. A
config that exists is never touched; `uninstall` removes only a unit this command wrote (it
carries a marker line), never a config.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from swarmd import __version__

MARKER = "# Written by `swarmd install`"
SHIPPED_EXEC = "/usr/local/bin/swarmd"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
UNIT_DIR = "etc/systemd/system"
CATALOG_DIR = "usr/local/lib/systemd/catalog"
HIDDEN = ("/home", "/root", "/run/user")  # ProtectHome=yes hides them from the service


class InstallError(Exception):
    """Something the operator must change; the message says what."""


class Plan(NamedTuple):
    name: str
    unit_path: Path
    config: str
    unit_text: str
    catalog_path: Path
    executable: str


def shipped(filename: str) -> str:
    return resources.files("swarmd").joinpath("share", filename).read_text(encoding="utf-8")


def executable() -> str:
    """This environment's swarmd: the console script next to the interpreter (a venv's
    bin/swarmd), else `python -m swarmd` with this interpreter."""
    script = Path(sys.executable).with_name("swarmd")
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    return f"{sys.executable} -m swarmd"


def default_config(name: str) -> str:
    return "/etc/swarmd.yaml" if name == "swarmd" else f"/etc/swarmd/{name}.yaml"


def unit_text(name: str, config: str, command: str, user: str | None) -> str:
    """The shipped unit with this venv's swarmd, `config`, and the name's runtime directory."""
    text = shipped("swarmd.service")
    if text.count(f"={SHIPPED_EXEC} ") != 2:
        raise InstallError("the shipped swarmd.service has no ExecStart/ExecReload to point at "
                           "this venv; reinstall the swarmd package")
    text = text.replace(f"ExecStart={SHIPPED_EXEC} run -c /etc/swarmd.yaml",
                        f"ExecStart={command} run -c {config}")
    text = text.replace(f"={SHIPPED_EXEC} ", f"={command} ")
    if name != "swarmd":
        text = text.replace("RuntimeDirectory=swarmd\n", f"RuntimeDirectory=swarmd-{name}\n")
        text = text.replace("[Service]\n", f"[Service]\nEnvironment=SWARMD_FLEET={name}\n", 1)
    if user is not None:
        text = text.replace("DynamicUser=yes\n", f"DynamicUser=no\nUser={user}\n")
    header = (f"{MARKER} {__version__} for {name}: `swarmd uninstall"
              f"{'' if name == 'swarmd' else ' --name ' + name}` removes it.\n"
              f"# Change it with a drop-in (`systemctl edit {name}`), not here: a new "
              f"`swarmd install` rewrites this file.\n")
    return header + text


def plan(name: str, config: str | None, user: str | None, root: str = "/") -> Plan:
    if not NAME.match(name):
        raise InstallError(f"--name {name!r}: use letters, digits, '-', '_' or '.' "
                           f"(it names the unit {name}.service)")
    if name.endswith((".service", ".socket")):
        raise InstallError(f"--name {name!r}: give the name without its suffix")
    if user is not None and not re.match(r"^[a-z_][a-z0-9_-]*\$?$", user):
        raise InstallError(f"--user {user!r} is not a valid user name")
    if user is not None and root == "/":
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            raise InstallError(f"--user {user!r}: no such user on this host (create it "
                               f"first, or leave --user out for a transient one)") from None
    config = config or default_config(name)
    if not os.path.isabs(config):
        raise InstallError(f"--config {config!r}: give an absolute path (the service does not "
                           f"run in this directory)")
    command = executable()
    base = Path(root)
    return Plan(name, base / UNIT_DIR / f"{name}.service", config,
                unit_text(name, config, command, user), base / CATALOG_DIR / "swarmd.catalog",
                command)


def warnings_for(p: Plan) -> list[str]:
    """What would keep the service from starting, told before it does."""
    out = []
    for path, what in ((p.executable.split()[0], "this venv"), (p.config, "the config")):
        top = next((hidden for hidden in HIDDEN if path.startswith(hidden + "/")), None)
        if top is not None:
            out.append(f"warning: {what} is under {top}, which the unit's sandbox hides "
                       f"(ProtectHome=yes): move it to /opt or /srv, or add "
                       f"`ProtectHome=read-only` with `systemctl edit {p.name}`")
    return out


def install(name: str = "swarmd", config: str | None = None, user: str | None = None,
            root: str = "/", print_only: bool = False, run=subprocess.run) -> list[str]:  # type: ignore[no-untyped-def]
    """Write the unit, the catalog and (where none exists) the config; returns the lines to
    tell the operator. `print_only`: the unit's text, nothing written."""
    p = plan(name, config, user, root)
    if print_only:
        return [p.unit_text.rstrip("\n")]
    said: list[str] = []
    if p.unit_path.exists() and MARKER not in p.unit_path.read_text(errors="replace"):
        raise InstallError(f"{p.unit_path} exists and was not written by swarmd install: "
                           f"remove it or choose another --name")
    _write(p.unit_path, p.unit_text)
    said.append(f"wrote {p.unit_path} (runs {p.executable} run -c {p.config})")
    _write(p.catalog_path, shipped("swarmd.catalog"))
    said.append(f"wrote {p.catalog_path}")
    config_path = Path(root) / p.config.lstrip("/")
    if config_path.exists():
        said.append(f"kept {p.config} as it is")
    else:
        _write(config_path, shipped("swarmd.yaml"))
        said.append(f"wrote {p.config}: the demo app; point `app:` at your code")
    if root == "/":
        said += _refresh(run)
    said += warnings_for(p)
    instance = "" if name == "swarmd" else f" -i {name}"
    said.append(f"next: edit {p.config}, `swarmd check -c {p.config}`, then "
                f"`systemctl enable --now {name}` and `swarmd status{instance}`")
    return said


def uninstall(name: str = "swarmd", root: str = "/", run=subprocess.run) -> list[str]:  # type: ignore[no-untyped-def]
    """Remove the unit `swarmd install` wrote (and the catalog when no such unit is left);
    never a config. A running service is left alone: stop it first."""
    if not NAME.match(name):
        raise InstallError(f"--name {name!r}: no such unit name")
    unit = Path(root) / UNIT_DIR / f"{name}.service"
    if not unit.exists():
        raise InstallError(f"{unit} does not exist: nothing to uninstall")
    if MARKER not in unit.read_text(errors="replace"):
        raise InstallError(f"{unit} was not written by swarmd install: left as it is")
    if root == "/" and _active(name, run):
        raise InstallError(f"{name}.service is running: `systemctl disable --now {name}` "
                           f"first, then uninstall")
    unit.unlink()
    said = [f"removed {unit}"]
    units = Path(root) / UNIT_DIR
    others = [u for u in units.glob("*.service") if MARKER in u.read_text(errors="replace")]
    catalog = Path(root) / CATALOG_DIR / "swarmd.catalog"
    if not others and catalog.exists():
        catalog.unlink()
        said.append(f"removed {catalog}")
    if root == "/":
        said += _refresh(run)
    config = default_config(name)
    said.append(f"kept your config ({config} by default) and the venv")
    return said


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.swarmd-install")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def _refresh(run) -> list[str]:  # type: ignore[no-untyped-def]
    """journalctl --update-catalog and systemctl daemon-reload, where systemd runs."""
    said = []
    if shutil.which("journalctl"):
        done = run(["journalctl", "--update-catalog"], capture_output=True, text=True)
        if done.returncode != 0:
            said.append(f"warning: journalctl --update-catalog failed: {done.stderr.strip()}")
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        done = run(["systemctl", "daemon-reload"], capture_output=True, text=True)
        if done.returncode != 0:
            said.append(f"warning: systemctl daemon-reload failed: {done.stderr.strip()}")
        else:
            said.append("systemctl daemon-reload: done")
    return said


def _active(name: str, run) -> bool:  # type: ignore[no-untyped-def]
    if not shutil.which("systemctl"):
        return False
    done = run(["systemctl", "is-active", "--quiet", f"{name}.service"], capture_output=True)
    return done.returncode == 0
