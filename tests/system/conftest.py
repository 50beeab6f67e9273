"""Fixtures for the system tests: a real systemd as PID 1 in a throwaway nspawn container.

Every test collected from this directory is marked ``system`` (deselect with
``-m "not system"``). A host that can't run the container makes the tests *fail*, naming the
reason and the fix; they are never skipped silently.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.system.container import Container, ContainerError, preflight
from tests.system.swarmd_service import Swarmd, install_units, service_binds

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

_boot_times: list[tuple[str, float, str]] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.system)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for machine, seconds, state in _boot_times:
        terminalreporter.write_line(f"system: {machine} booted in {seconds:.2f}s ({state})")


def container_binds() -> list[str]:
    """Host paths the container needs, bound read-only at their own paths.

    The repo (swarmd's code, packaging, etc/), the running venv, and the Python installation
    it points to; paths under ``/usr`` are skipped because the container has the host's
    ``/usr`` anyway.
    """
    binds: list[str] = []
    for path in (REPO, Path(sys.prefix), Path(sys.base_prefix)):
        path = path.resolve()
        if path == Path("/usr") or Path("/usr") in path.parents:
            continue
        if any(path == Path(b) or Path(b) in path.parents for b in binds):
            continue
        binds.append(str(path))
    return binds + service_binds()


def boot_or_fail(log_path: Path | None = None) -> Container:
    """Boot a container with :func:`container_binds`, or ``pytest.fail`` saying why and how."""
    problems = preflight()
    if problems:
        pytest.fail(
            "system tests cannot run on this host:\n  - " + "\n  - ".join(problems),
            pytrace=False,
        )
    try:
        booted = Container.boot(container_binds(), log_path=log_path)
    except ContainerError as e:
        pytest.fail(str(e), pytrace=False)
    _boot_times.append((booted.machine, booted.boot_seconds, booted.boot_state))
    return booted


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted container, shared by the tests of one module.

    Module scope, not session: a boot takes about a second here (see the terminal summary),
    so a fresh systemd per module costs little and keeps modules independent: units, failed
    states ("degraded") and journal entries of one module never leak into the next, and a
    module that wedges its container doesn't take the rest of the suite down with it. Tests
    within a module share the container, so they use their own unit names, and read the
    journal after a cursor taken at their start (``journal_cursor()``).
    """
    booted = boot_or_fail(tmp_path_factory.mktemp("container") / "console.log")
    try:
        yield booted
    finally:
        booted.stop()


@pytest.fixture
def make_container(tmp_path: Path) -> Iterator[Callable[[], Container]]:
    """A factory for extra containers (e.g. to test teardown); all are stopped at the end."""
    made: list[Container] = []

    def make() -> Container:
        made.append(boot_or_fail(tmp_path / f"console-{len(made)}.log"))
        return made[-1]

    yield make
    for extra in made:
        extra.stop()


@pytest.fixture(scope="session")
def venv_python() -> str:
    """The interpreter running the tests: valid inside the container, which binds its venv."""
    return sys.executable


@pytest.fixture(scope="module")
def units(container: Container) -> Container:
    """The container with the shipped swarmd units installed (test drop-in included)."""
    install_units(container)
    return container


@pytest.fixture
def swarmd(units: Container) -> Iterator[Swarmd]:
    """The swarmd.service of `units`, reset after the test (stopped, failed state cleared)."""
    service = Swarmd(units)
    yield service
    service.reset()
