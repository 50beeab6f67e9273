"""Loading a version in a loader process: the config, then the app, each failure a reason.

Whatever the config file or the app does here (raise anything, call sys.exit or argparse, print
without end, crash, hang) stays in this process: the supervisor reads the messages it sends,
and ends it when its time is up. What the app prints while it is imported is kept (the last
lines of it) to explain a failure.
"""

from __future__ import annotations

import gc
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from swarmd import __version__
from swarmd.candidate.wire import Kind, Stage
from swarmd.config import Config, ConfigError, to_data
from swarmd.stdio import flush_std_streams

OUTPUT_TAIL = 20  # lines of the app's import-time output kept to explain a failure
OUTPUT_LINE = 300  # characters of each

Send = Callable[..., None]  # send(kind, **fields)


class Loaded(NamedTuple):
    config: Config
    app: Callable[..., Any] | str | None  # imported (kept), its name, or None for a command
    seconds: float  # how long the import took


class _Tail:
    """The last lines written to a pipe, read by a thread until the pipe's EOF (an app that
    prints without end costs a bounded amount of memory)."""

    def __init__(self, fd: int) -> None:
        import threading  # only a candidate captures this way (see import_captured)

        self.lines: deque[str] = deque(maxlen=OUTPUT_TAIL)
        self._fd = fd
        self._thread = threading.Thread(target=self._read, name="swarmd-import-output",
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        partial = b""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:
                break
            if not data:
                break
            *whole, partial = (partial + data).split(b"\n")
            partial = partial[-OUTPUT_LINE * 4:]
            self.lines.extend(line.decode("utf-8", "replace")[:OUTPUT_LINE] for line in whole)
        if partial:
            self.lines.append(partial.decode("utf-8", "replace")[:OUTPUT_LINE])
        os.close(self._fd)

    def join(self) -> list[str]:
        self._thread.join(timeout=1.0)
        return [line for line in self.lines if line.strip()]


def import_captured(target: Callable[[], Any], capture: bool = True
                    ) -> tuple[Any, BaseException | None, list[str]]:
    """Run `target` (an import): (result, what it raised, the last lines it printed). With
    `capture`, fds 1 and 2 go to a pipe read by a thread meanwhile; without, the caller's
    stdout and stderr already go where someone keeps them (a throwaway loader's parent)."""
    import traceback

    if not capture:
        try:
            return target(), None, []
        except BaseException as exc:  # noqa: BLE001 - anything the app raises is a reason
            traceback.print_exc()  # to the parent, which keeps the last lines
            flush_std_streams()
            return None, exc, []
    flush_std_streams()
    read_end, write_end = os.pipe()
    saved = os.dup(1), os.dup(2)
    tail = _Tail(read_end)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    result: Any = None
    error: BaseException | None = None
    try:
        result = target()
    except BaseException as exc:  # noqa: BLE001 - anything the app raises is a reason
        error = exc
        traceback.print_exc()  # into the tail: the frames say where
    finally:
        flush_std_streams()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
    return result, error, tail.join()


def describe_failure(app: str, error: BaseException) -> str:
    """What went wrong while importing the app, as one line an operator can act on."""
    if isinstance(error, SystemExit):
        return (f"app: importing {app!r} called sys.exit({error.code!r}) (argparse does that "
                f"on bad arguments): an app must not exit or parse the command line at import")
    if isinstance(error, KeyboardInterrupt):
        return f"app: importing {app!r} was interrupted"
    text = str(error)
    return f"app: cannot load {app!r}: {type(error).__name__}" + (f": {text}" if text else "")


def _resolve(name: str) -> Callable[[], Any]:
    from swarmd.node.apps import resolve

    return lambda: resolve(name)


def import_app(name: str, *, freeze: bool, capture: bool = True
               ) -> tuple[Any, list[str], float]:
    """Import the app here, with collection off meanwhile and, with `freeze`, the heap frozen
    after (the nodes forked from this process then share its pages through their own
    collections); raises LoadFailure."""
    started = time.monotonic()
    enabled = gc.isenabled()
    gc.disable()
    try:
        app, error, output = import_captured(_resolve(name), capture)
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()
    if error is not None:
        raise LoadFailure(Stage.APP, [describe_failure(name, error), *output])
    return app, output, time.monotonic() - started


def import_app_in_a_fork(name: str) -> float:
    """Import the app in a throwaway child (this process must stay without it: preload is off,
    each node imports the app itself); raises LoadFailure with the child's reason."""
    import json

    started = time.monotonic()
    read_end, write_end = os.pipe()
    flush_std_streams()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(read_end)
            _app, error, output = import_captured(_resolve(name))
            if error is not None:
                os.write(write_end, json.dumps([describe_failure(name, error),
                                                *output]).encode())
                code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        try:
            problems = json.loads(b"".join(chunks) or b"null")
        except ValueError:
            problems = None
        if not isinstance(problems, list):
            signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            problems = [f"app: importing {name!r} killed the process (signal {signum})"
                        if signum else f"app: importing {name!r} failed (exit status "
                        f"{os.waitstatus_to_exitcode(status)})"]
        raise LoadFailure(Stage.APP, [str(line) for line in problems])
    return time.monotonic() - started


class LoadFailure(Exception):
    def __init__(self, stage: Stage, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.stage = stage
        self.problems = problems


def read_config(path: str) -> Config:
    """The validated config; raises LoadFailure (anything at all that goes wrong)."""
    from swarmd.config import validate

    try:
        return validate.load(path)
    except ConfigError as exc:
        raise LoadFailure(Stage.CONFIG, exc.problems) from None
    except RecursionError:
        raise LoadFailure(Stage.CONFIG, [f"{path}: nested too deeply to be a config"]) from None
    except MemoryError:
        raise LoadFailure(Stage.CONFIG, [f"{path}: too large to be a config"]) from None
    except Exception as exc:  # noqa: BLE001 - a config must never end the loader unexplained
        raise LoadFailure(Stage.CONFIG, [f"{path}: cannot be read as a config: "
                                         f"{type(exc).__name__}: {exc}"]) from None


def load_version(path: str, send: Send, *, throwaway: bool, freeze: bool = False
                 ) -> Loaded | None:
    """Read the config and import the app, telling the supervisor each step; None (after a
    FAILED message) when the version cannot run.

    throwaway: this process ends after the load and its nodes, if any (first start,
    `swarmd check`), so the app is imported right here whatever `preload` says, its heap
    frozen with `freeze` (it forks a first start's nodes). Otherwise (a deploy's candidate,
    which forks the new nodes) the app is kept imported with preload, and only tried in a
    throwaway child without it; the new swarmd code is imported too, so that the
    supervisor's re-execution into it is known to work."""
    try:
        config = read_config(path)
        send(Kind.CONFIG, config=to_data(config), version=__version__)
        app: Callable[..., Any] | str | None = None
        seconds = 0.0
        if config.command is None:
            if throwaway or config.preload:
                # a throwaway loader's output goes to its parent, which keeps the last lines
                app, _output, seconds = import_app(config.app,
                                                   freeze=freeze or not throwaway,
                                                   capture=not throwaway)
            else:
                seconds = import_app_in_a_fork(config.app)
                app = config.app
        if not throwaway:
            _import_supervisor()
    except LoadFailure as failure:
        send(Kind.FAILED, stage=failure.stage.value, problems=failure.problems)
        return None
    send(Kind.LOADED, seconds=round(seconds, 6))
    return Loaded(config, app, seconds)


def _import_supervisor() -> None:
    """The modules the supervisor runs after it re-executes itself into the swarmd code on
    disk: a mistake in them is found here, while the old supervisor still runs."""
    import importlib

    try:
        for module in ("swarmd.supervisor.core", "swarmd.supervisor.handover", "swarmd.cli"):
            importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        raise LoadFailure(Stage.SWARMD, [f"swarmd {__version__}: the new swarmd code does not "
                                         f"import: {type(exc).__name__}: {exc}"]) from None
