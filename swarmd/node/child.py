"""Life inside a fork: signals, parent-death fencing, output, then the app or an exec.

Runs in the child between fork and the app; it never returns (os._exit), so no supervisor
cleanup code ever runs twice. It never imports the supervisor.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import resource
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

from swarmd.api import Node
from swarmd.config.output import OutputLimit
from swarmd.node.apps import resolve
from swarmd.systemd import activation, journal
from swarmd.systemd.events import FLEET, NODE_IDENTIFIER
from swarmd.systemd.ratelimit import OutputLimiter

try:  # signal.signal without the enum wrapping of the old handler, which for a Python handler
    # raises and formats a ValueError: ~100 copy-on-write faults in a fresh fork for three calls
    from _signal import signal as _set_handler
except ImportError:  # pragma: no cover - not CPython
    _set_handler = signal.signal
_DEFAULT, _IGNORE = int(signal.SIG_DFL), int(signal.SIG_IGN)

PR_SET_PDEATHSIG = 1
ORPHAN_POLL = 0.2  # seconds between parent checks once the supervisor's pipe broke
ORPHAN_IDLE_MS = 1000  # milliseconds between parent checks while its pipe is fine
ORPHAN_GRACE = 0.6  # an orphan's app gets this long to return after `stopping` is set
EXIT_EXEC_FAILED = 127
_LEVEL_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                   (logging.INFO, 6))


class ChildSpec(NamedTuple):
    """Everything a child needs, prepared by the supervisor before the fork."""

    node_id: int
    generation: int
    supervisor_pid: int
    health_fd: int
    stdout_fd: int
    stderr_fd: int
    close_runs: list[tuple[int, int]]  # the supervisor's fds, see fd_runs
    env: dict[str, str]
    journal: bool  # write logs and tracebacks to the journal directly
    log_handler: logging.Handler | None  # the root handler, built before the fork (spawn.py)
    output: OutputLimit  # how much of its logging may reach the journal
    nofile: tuple[int, int] | None  # the RLIMIT_NOFILE swarmd started with, for the node
    oom_score: int | None  # the node's oom_score_adj, above the supervisor's
    app: Callable[[Node], Any] | str | None = None
    command: tuple[str, ...] | None = None
    # forked by a deploy's candidate through an intermediate process (that pid), which exits
    # at once: the node becomes the supervisor's child (a subreaper) only then
    reparent_from: int | None = None
    # a first start's loader forks the whole fleet, then exits: until then its nodes wait
    # on this pipe (EOF when it is gone), instead of taking CPU from it
    gate_fd: int | None = None
    node: Node | None = None  # what the app gets, built before the fork (app nodes)
    cgroup_dir: str | None = None  # the node's own cgroup (node-N), where there are cgroups
    title: str | None = None  # what `ps` shows for it (app nodes)


try:  # looked up once, in the supervisor: a node neither dlopens libc nor builds the
    # function object again after each fork
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - no dynamic libc, or no prctl
    _PRCTL = None


def prctl_pdeathsig(sig: int) -> None:
    if _PRCTL is not None:  # else the parent check below still fences the node
        _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _priority(level: int) -> int:
    for threshold, priority in _LEVEL_PRIORITY:
        if level >= threshold:
            return priority
    return 7


class JournalHandler(logging.Handler):
    """node.log records straight to the journal, tagged with the node, within the node's
    output limit (config `output:`): they do not pass through the supervisor, whose limit
    covers the node's stdout and stderr, so the node applies the same limit itself and says
    what it dropped, before its next record that goes out (or as it ends)."""

    def __init__(self, fields: dict[str, Any], limiter: OutputLimiter | None = None) -> None:
        super().__init__()
        self.fields = fields
        self.limiter = limiter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            limiter = self.limiter
            if limiter is not None:
                now = time.monotonic()
                if not limiter.take(0, 1, now):
                    return
                self.tell_dropped(now)
            message = self.format(record)
            journal.journal_send(message, PRIORITY=_priority(record.levelno),
                            LOGGER=record.name, CODE_FILE=record.pathname,
                            CODE_LINE=record.lineno, CODE_FUNC=record.funcName, **self.fields)
        except Exception:
            self.handleError(record)

    def tell_dropped(self, now: float, force: bool = False) -> None:
        if self.limiter is None:
            return
        count, span = self.limiter.report(0, now, force=force)
        if count:
            journal.journal_send(f"{count} log record(s) of this node dropped over {span:.1f}s: "
                                 f"it logged faster than its output limit "
                                 f"({self.limiter.limit.describe()})", PRIORITY=4,
                                 SWARMD_DROPPED=count, **self.fields)


def _node_fields(spec: ChildSpec) -> dict[str, Any]:
    fields = {"SYSLOG_IDENTIFIER": NODE_IDENTIFIER, "SWARMD_NODE_ID": spec.node_id,
              "SWARMD_NODE_GENERATION": spec.generation, "SWARMD_NODE_PID": os.getpid(),
              "SYSLOG_PID": os.getpid()}
    if FLEET is not None:
        fields["SWARMD_FLEET"] = FLEET
    return fields


def _restore_fd_limit(spec: ChildSpec) -> None:
    if spec.nofile is not None:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, spec.nofile)
        except (OSError, ValueError):
            pass


def _prefer_as_oom_victim(spec: ChildSpec) -> None:
    """Raise this node's oom_score_adj above the supervisor's (raising needs no privilege):
    under memory pressure the kernel kills a node, which is restarted, not the supervisor,
    whose death would take the whole fleet down. The value was worked out before the fork."""
    if spec.oom_score is None:
        return
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, b"%d" % spec.oom_score)
        finally:
            os.close(fd)
    except OSError:
        pass


def _reset_signals(command: bool) -> None:
    """Undo the supervisor's signal set-up, as little as needed: TERM, INT and QUIT at once
    (until the node's own handlers are in, they end it like any fresh process); before an
    exec, caught signals reset themselves but ignored ones (Python ignores PIPE and XFSZ) stay
    ignored, so those go back to the default. An app node keeps Python's SIGPIPE behaviour
    (BrokenPipeError) and gets its other handlers from _run_app."""
    signal.set_wakeup_fd(-1)
    # CHLD too: the supervisor's handler would queue a node's own children's exits forever
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
        _set_handler(sig, _DEFAULT)
    if command:  # HUP, TSTP, TTIN: a deploy's candidate ignores them, and forks nodes too
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGTSTP,
                    signal.SIGTTIN):
            _set_handler(sig, _DEFAULT)
    # the signal mask is inherited already empty: the supervisor cleared it (spawn.py)


def _setup_stdio(spec: ChildSpec) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(spec.stdout_fd, 1)
    os.dup2(spec.stderr_fd, 2)
    for fd in {devnull, spec.stdout_fd, spec.stderr_fd} - {0, 1, 2}:
        os.close(fd)


def _close_supervisor_fds(spec: ChildSpec) -> None:
    for low, high in spec.close_runs:
        os.closerange(low, high)


def main(spec: ChildSpec) -> NoReturn:
    """The child's whole life; always ends in os._exit."""
    # Before anything allocates: the heap inherited from the fork goes out of the collector's
    # reach, so its walks never write to (and copy) pages shared with the supervisor.
    gc.freeze()
    code = 70
    try:
        code = _run(spec)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        try:
            sys.stderr.write(traceback.format_exc())
        except Exception:
            pass
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        handler = spec.log_handler
        if isinstance(handler, JournalHandler) and spec.journal:
            try:
                handler.tell_dropped(time.monotonic(), force=True)  # its story ends here
            except Exception:
                pass
        os._exit(code)


def _run(spec: ChildSpec) -> int:
    _reset_signals(bool(spec.command))
    os.setpgid(0, 0)  # the terminal's ^C reaches the supervisor only, which stops in order
    # first: among them, a first start's gate, whose write end every node holds till then
    _close_supervisor_fds(spec)
    if spec.reparent_from is not None:
        _wait_for_reparenting(spec.reparent_from, spec.gate_fd)
    # Hard until the node reported: nothing of ours handles a TERM yet, and an app may replace
    # the handler while it boots. An app node's fence becomes soft at its first report
    # (_run_app); a command node cannot run a parent check after exec, so its stays hard.
    prctl_pdeathsig(signal.SIGKILL)
    if os.getppid() != spec.supervisor_pid:
        return 0  # the supervisor died between fork and prctl
    if spec.cgroup_dir is not None and spec.command:  # a program cannot move itself later
        enter_cgroup(spec.cgroup_dir)
    _restore_fd_limit(spec)
    _setup_stdio(spec)
    for name, value in spec.env.items():  # not environ.update(): its ABC checks alone cost
        os.environ[name] = value          # ~10 copy-on-write faults, even for no variable
    os.environ["SWARMD_NODE_ID"] = str(spec.node_id)
    os.environ["SWARMD_NODE_GENERATION"] = str(spec.generation)
    activation.for_node()
    if spec.command:
        return _exec(spec)
    return _run_app(spec)


REPARENT_WAIT = 2.0  # seconds; the intermediate exits right after its fork


def _wait_for_reparenting(intermediate: int, gate: int | None) -> None:
    """Until the process that forked this node is gone and the node is the supervisor's
    child: a parent-death signal set before would fire at that process's exit."""
    if gate is not None:
        try:
            while os.read(gate, 1):  # nothing is written: EOF when the forker exits
                pass
        except OSError:
            pass
        os.close(gate)
    deadline = time.monotonic() + REPARENT_WAIT
    while os.getppid() == intermediate and time.monotonic() < deadline:
        os.sched_yield()


HEALTH_FD_FOR_COMMANDS = 3  # low and fixed: `echo 0 >&3` works in every shell


def _exec(spec: ChildSpec) -> int:
    _prefer_as_oom_victim(spec)  # a program runs no code of ours after the exec
    fd = HEALTH_FD_FOR_COMMANDS + activation.count()  # after the sockets, if any
    if spec.health_fd != fd:
        os.dup2(spec.health_fd, fd, inheritable=True)
        os.close(spec.health_fd)
    else:
        os.set_inheritable(fd, True)
    os.environ["SWARMD_HEALTH_FD"] = str(fd)
    assert spec.command is not None
    try:
        os.execvpe(spec.command[0], list(spec.command), os.environ)
    except OSError as exc:
        sys.stderr.write(f"swarmd: cannot execute {spec.command[0]}: {exc.strerror}\n")
    return EXIT_EXEC_FAILED


def _setup_logging(spec: ChildSpec) -> logging.Logger:
    """Attach the handler the supervisor built before the fork (spawn.node_log_handler)."""
    handler = spec.log_handler
    if handler is not None and spec.journal:
        root = logging.getLogger()
        if root.handlers != [handler]:  # an app's own would write to the pipe: twice
            for old in list(root.handlers):
                root.removeHandler(old)
            root.addHandler(handler)
        assert isinstance(handler, JournalHandler)
        handler.fields = _node_fields(spec)
        handler.limiter = OutputLimiter(spec.output)
    # A stream handler writes to sys.stderr, the same object here: fd 2 is now the node's pipe
    return logging.getLogger("swarmd.node")


def own_frames(frame: Any) -> traceback.StackSummary:
    """The stack of `frame`, from the app's function down: the frames below it are the
    supervisor's, inherited from the fork (its loop, the spawn), which say nothing of the app."""
    frames = list(traceback.walk_stack(frame))  # innermost first
    for index, (each, _) in enumerate(frames):
        if each.f_code is _run_app.__code__:
            frames = frames[:index]
            break
    return traceback.StackSummary.extract(reversed(frames))


def _dump_stacks(log: logging.Logger) -> None:
    """Every thread's stack as one entry (SIGTTIN), written from a helper thread so that the
    main thread is shown where the app really is, not inside a signal handler."""
    frames = sys._current_frames()
    me = threading.get_ident()
    parts = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident) if thread.ident is not None else None
        if frame is None or thread.ident == me:
            continue
        stack = "".join(traceback.format_list(own_frames(frame)))
        parts.append(f'Thread "{thread.name}" ({thread.ident}):\n{stack}')
    log.info("stacks of %d threads (SIGTTIN):\n%s", len(parts), "\n".join(parts))


CGROUP_WAIT = 2.0  # seconds a node waits for its cgroup's last occupant to be gone


def enter_cgroup(directory: str, with_descendants: bool = False) -> bool:
    """Move this process (and, `with_descendants`, every process below it) into its node's
    cgroup, once the supervisor has emptied it of what the slot's last node left (it kills
    those right after it forked this one).

    The kernel makes a lone move wait for an RCU grace period (~8-12 ms on a host without the
    cgroup2 mount option favordynmods; moves right after it cost ~50 us), so an app node moves
    from its parent-check thread after its first report, off the way from a death to its
    replacement's report, taking along what its app started meanwhile (its children, theirs);
    a command node moves before its exec. What an app double-forks away before its first
    report is found by its process group and marks instead (swarmd/supervisor/resources.py)."""
    try:
        os.makedirs(directory, exist_ok=True)  # the first node of a slot makes its group
        deadline = time.monotonic() + CGROUP_WAIT
        while time.monotonic() < deadline:
            with open(os.path.join(directory, "cgroup.events"), "rb") as events:
                if b"populated 0" in events.read():
                    break
            threading.Event().wait(0.01)
        fd = os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, b"0")
            for pid in _below_me() if with_descendants else ():
                try:
                    os.write(fd, str(pid).encode())
                except OSError:
                    pass  # gone meanwhile, or not ours to move
        finally:
            os.close(fd)
        return True
    except OSError:
        return False  # the node runs on where it is: only its accounting is lost


def _below_me() -> list[int]:
    """Every process below this one (figures.descendants lists this one first)."""
    from swarmd.node.figures import descendants  # loaded already: the supervisor's module

    return descendants(os.getpid())[1:]


def _settle_and_watch(node: Node, spec: ChildSpec) -> None:
    """The parent-check thread's first work, off the app's way: the title and the cgroup."""
    if spec.title is not None:
        from swarmd.node.titles import set_title

        set_title(spec.title)
    if spec.cgroup_dir is not None:
        enter_cgroup(spec.cgroup_dir, with_descendants=True)
    _watch_parent(node, spec)


def _watch_parent(node: Node, spec: ChildSpec) -> None:
    """The parent check behind PR_SET_PDEATHSIG: an orphan stops, then exits within a second.

    It sleeps in poll() on stderr, the write end of a pipe whose only reader is the supervisor:
    POLLERR the moment that read end closes, i.e. the supervisor is gone, so an idle node does
    not wake up five times a second; a look each ORPHAN_IDLE covers an app that replaced its
    stderr. (Not the health pipe: a poll in progress holds its file, and a node that closes its
    health pipe must be seen doing so.) getppid() stays the judge."""
    waiter = select.poll()
    waiter.register(2, 0)  # no events asked: only POLLERR (reader gone) or POLLNVAL wake it
    handler = spec.log_handler if spec.journal else None
    while not node.orphaned:
        if isinstance(handler, JournalHandler):  # the log records it dropped, told in time
            handler.tell_dropped(time.monotonic())
        if waiter.poll(ORPHAN_IDLE_MS):
            # The supervisor's exit closes its fds just before the node is reparented.
            while not node.orphaned:
                threading.Event().wait(ORPHAN_POLL)
    node.stopping.set()
    threading.Event().wait(ORPHAN_GRACE)
    os._exit(0)


def _run_app(spec: ChildSpec) -> int:
    if sys.stdout is not None and not sys.stdout.line_buffering:  # prepared in the supervisor
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.set_blocking(spec.health_fd, False)
    log = _setup_logging(spec)
    watching: list[bool] = []

    def watch_parent() -> None:
        """After the first report (or at the first TERM), off the path from fork to first
        report: the parent check starts, the fence turns soft (TERM, not KILL, when the
        supervisor dies: the app may finish its job; the check ends it within a second), and
        the node becomes the likelier OOM victim (until then it has allocated little, and its
        score equals the supervisor's, who is much smaller than a worker). The parent-death
        signal belongs to the thread that set it: only the main thread can soften it."""
        if not watching:
            watching.append(True)
            if threading.current_thread() is threading.main_thread():
                prctl_pdeathsig(signal.SIGTERM)
                if os.getppid() != spec.supervisor_pid:
                    node.stopping.set()  # it died before the switch: the check ends us
            _prefer_as_oom_victim(spec)
            threading.Thread(target=_settle_and_watch, args=(node, spec),
                             name="swarmd-parent-check", daemon=True).start()

    def on_term(*_: object) -> None:
        node.stopping.set()
        watch_parent()

    node = spec.node or Node(spec.node_id, spec.generation, spec.health_fd, log,
                             spec.supervisor_pid)
    node._after_first_report = watch_parent
    _set_handler(signal.SIGTERM, on_term)
    _set_handler(signal.SIGINT, lambda *_: node.stopping.set())
    _set_handler(signal.SIGQUIT, lambda *_: node.stopping.set())
    _set_handler(signal.SIGTSTP, lambda *_: node.quieting.set())
    _set_handler(signal.SIGHUP, _IGNORE)
    _set_handler(signal.SIGTTIN, lambda *_: threading.Thread(
        target=_dump_stacks, args=(log,), name="swarmd-stacks", daemon=True).start())
    try:
        app = resolve(spec.app)
        try:
            result = app(node)
        finally:
            if node._metrics is not None:
                node.flush_metrics()  # what changed since the last write: read at its exit
    except SystemExit:
        raise
    except BaseException:
        text = traceback.format_exc()
        if spec.journal:
            journal.journal_send(text.rstrip(), PRIORITY=3, **_node_fields(spec))
        else:
            sys.stderr.write(text)
        return 1
    if isinstance(result, int) and not isinstance(result, bool):
        return result & 0xFF
    return 0
