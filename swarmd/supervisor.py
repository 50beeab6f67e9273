"""The supervision loop: signals, timers and node events -> decisions.

One thread, one selector: every node's health pipe, output pipes and pidfd, the signal wake-up
fd and the control socket. Signal handlers only queue; the loop dispatches each to one
`handle_<signal>` method. Deadlines are timers, so the loop sleeps exactly until the next one.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from swarmd import config as config_module
from swarmd.backoff import Backoff
from swarmd.config import Config, ConfigError, format_duration
from swarmd.control import ControlServer
from swarmd.events import Event, JournalSink, Sink, default_sink
from swarmd.node import NodeProcess, State, spawn
from swarmd.reload import RollingReload, Waiter
from swarmd.sd import Notifier
from swarmd.status import NodeRow, status_text
from swarmd.timers import Timer, Timers

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN)
EXTEND_EVERY = 2.0  # seconds between EXTEND_TIMEOUT_USEC while a stop or reload progresses
CLOSED_PIPE_GRACE = 0.5  # seconds between EOF on a health pipe and calling it an error
PROTOCOL_ERROR_EVERY = 1.0  # at most one protocol-error entry per node per second


class PreloadError(Exception):
    """The app named in the config cannot be imported in the supervisor."""


def resolve_app(spec: str) -> Callable[..., Any]:
    from swarmd.child import resolve  # the same lookup a node does without preload

    return resolve(spec)


class Slot:
    """A stable node id; its process comes and goes, its generation counts the starts."""

    def __init__(self, slot_id: int, backoff: Backoff) -> None:
        self.id = slot_id
        self.generation = -1
        self.proc: NodeProcess | None = None
        self.backoff = backoff
        self.restarts = 0
        self.restart_timer: Timer | None = None
        self.down_reason: str | None = None

    def cancel_restart(self) -> None:
        if self.restart_timer is not None:
            self.restart_timer.cancel()
            self.restart_timer = None


class Supervisor:
    def __init__(self, config: Config, *, sink: Sink | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.sink = sink or default_sink()
        self.journal = isinstance(self.sink, JournalSink)
        self.notifier = notifier or Notifier()
        self.clock = time.monotonic
        self.timers = Timers()
        self.selector = selectors.DefaultSelector()
        self.slots: dict[int, Slot] = {}
        self.app: Callable[..., Any] | str | None = None
        self.quiet = False
        self.stopping = False
        self.stop_reason = ""
        self.exit_code = 0
        self.ready_sent = False
        self.restarts = 0
        self.reload: RollingReload | None = None
        self.pending_reload: list[Waiter] = []
        self.control: ControlServer | None = None
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self._signals: deque[int] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._dirty = True
        self._last_protocol_event: dict[int, float] = {}

    # ---- lifecycle -------------------------------------------------------------------------

    def preload(self) -> None:
        """Import the app before forking (copy-on-write sharing); a broken one is refused."""
        self.app = self._load_app(self.config)

    def _load_app(self, config: Config) -> Callable[..., Any] | str | None:
        if config.command is not None:
            return None
        if not config.preload:
            return config.app
        try:
            return resolve_app(config.app)
        except Exception as exc:
            raise PreloadError(f"app: cannot load {config.app!r}: "
                               f"{type(exc).__name__}: {exc}") from exc

    def run(self) -> int:
        """Start every node and supervise until stopped; returns the exit code."""
        self._install_signals()
        try:
            if self.app is None:
                self.preload()
            self.emit("swarmd.started", f"starting {self.config.nodes} node(s) from "
                      f"{self.config.path or 'defaults'}")
            for slot_id in self.config.node_ids:
                self.start(self._add_slot(slot_id))
            self.timers.call_at(self.clock() + self.config.timeouts.boot, self._boot_deadline)
            if self.notifier.watchdog_interval:
                self._watchdog(self.clock())
            while not (self.stopping and not self._live()):
                self._turn()
            self.emit("swarmd.stopped", f"stopped ({self.stop_reason}), exit status "
                      f"{self.exit_code}")
        except Exception as exc:
            self.exit_code = 1
            self.emit("swarmd.stopped", f"supervisor failed: {type(exc).__name__}: {exc}; "
                      f"stopping every node", priority=2)
            self._emergency_stop()
            raise
        finally:
            self._close()
        return self.exit_code

    def _turn(self) -> None:
        deadline = self.timers.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - self.clock())
        for key, _ in self.selector.select(timeout):
            key.data()
        if self._signals:
            self._dispatch_signals()
        self.timers.run_due(self.clock())
        if self._dirty:
            self._dirty = False
            self.notifier.status(self.status_text())

    def _live(self) -> list[NodeProcess]:
        return [slot.proc for slot in self.slots.values() if slot.proc is not None]

    def attach_control(self, server: ControlServer) -> None:
        self.control = server
        server.register(self.selector)

    def handle_request(self, request: dict[str, Any],
                       reply: Callable[[dict[str, Any]], None]) -> None:
        """A control-socket request: status, reload (answered when done) or quiet."""
        command = request.get("command")
        if command == "status":
            now = time.time()
            reply({"ok": True, "pid": os.getpid(), "status": self.status_text(),
                   "mode": self.mode(), "restarts": self.restarts,
                   "config": self.config.path,
                   "nodes": [row.to_dict(now) for row in self.rows()]})
        elif command == "reload":
            self.request_reload(lambda ok, message: reply({"ok": ok, "message": message}))
        elif command == "quiet":
            self.enter_quiet()
            reply({"ok": True, "message": f"quiet: TSTP sent to {len(self._live())} node(s)"})
        else:
            reply({"ok": False, "error": f"unknown command {command!r}"})

    def _close(self) -> None:
        if self.control is not None:
            self.control.close()
        signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- signals ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, lambda signum, _frame: self._signals.append(signum))
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wakeup)

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _dispatch_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            if signum in STOP_SIGNALS:
                self.handle_stop(signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                self.handle_hup()
            elif signum == signal.SIGTSTP:
                self.handle_tstp()
            elif signum == signal.SIGTTIN:
                self.handle_ttin()

    def handle_stop(self, why: str) -> None:
        self.begin_stop(f"{why} received")

    def handle_hup(self) -> None:
        self.request_reload(None)

    def handle_tstp(self) -> None:
        self.enter_quiet()

    def handle_ttin(self) -> None:
        for proc in self._live():
            if not proc.is_command:  # a program's default for TTIN is to stop itself
                proc.send(signal.SIGTTIN)

    # ---- decisions -------------------------------------------------------------------------

    def begin_stop(self, reason: str, exit_code: int | None = None) -> None:
        if exit_code is not None:
            self.exit_code = max(self.exit_code, exit_code)
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        self.notifier.stopping()
        self.emit("swarmd.stopping", f"stopping: {reason}; TERM to {len(self._live())} node(s)")
        if self.reload is not None:
            self.reload.finish(False, "a stop was requested during the reload")
        for waiter in self.pending_reload:
            waiter(False, "the supervisor is stopping")
        self.pending_reload.clear()
        now = self.clock()
        for slot in self.slots.values():
            slot.cancel_restart()
            if slot.proc is not None:
                self.terminate(slot.proc, "stop", now)
        self._extend_timeout()
        self.mark_dirty()

    def enter_quiet(self) -> None:
        if self.stopping:
            return
        if self.reload is not None:
            self.reload.finish(False, "quieted during the reload")
        self.quiet = True
        for slot in self.slots.values():
            slot.cancel_restart()
            if slot.proc is not None:
                slot.proc.send(signal.SIGTSTP)
            elif slot.down_reason is None:
                slot.down_reason = "quiet"
        self.emit("swarmd.quiet", f"quiet: TSTP to {len(self._live())} node(s); nothing is "
                                  f"restarted until a reload or stop")
        self.mark_dirty()

    def request_reload(self, waiter: Waiter | None) -> None:
        """HUP or `swarmd reload`: re-read the config, then roll or quiet per `reload`."""
        waiters = [waiter] if waiter is not None else []
        if self.stopping:
            for w in waiters:
                w(False, "the supervisor is stopping")
            return
        if self.reload is not None:  # after the running one, with the newest file
            self.pending_reload.extend(waiters or [lambda ok, msg: None])
            return
        self.notifier.reloading()
        self.emit("swarmd.reloading", f"reloading {self.config.path or 'config'}")
        try:
            new = config_module.load(self.config.path) if self.config.path else self.config
            app = self._load_app(new)
        except (ConfigError, PreloadError) as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            message = ("new config rejected, the old one keeps running:\n"
                       + "\n".join(problems))
            self._reload_done(False, message, waiters)
            return
        self.config, self.app = new, app
        for slot in self.slots.values():
            slot.backoff.policy = new.restart
        if new.reload == "quiet":
            self.enter_quiet()
            self._reload_done(True, "reloaded: every node quieted (reload: quiet)", waiters)
            return
        self.quiet = False
        wanted = list(new.node_ids)
        removed = [slot_id for slot_id in self.slots if slot_id not in wanted]
        for slot_id in wanted:
            if slot_id not in self.slots:
                self._add_slot(slot_id)
            self.slots[slot_id].down_reason = None
        self.reload = RollingReload(self, wanted, removed, waiters)
        self._extend_timeout()
        self.reload.step()

    def reload_finished(self, reload: RollingReload, ok: bool, message: str) -> None:
        if self.reload is reload:
            self.reload = None
        self._reload_done(ok, message, reload.waiters)

    def _reload_done(self, ok: bool, message: str, waiters: list[Waiter]) -> None:
        self.notifier.ready()
        self.emit("swarmd.reloaded" if ok else "swarmd.reload_failed", message)
        for waiter in waiters:
            waiter(ok, message)
        self.mark_dirty()
        if self.pending_reload and not self.stopping:
            pending, self.pending_reload = self.pending_reload, []
            self.request_reload(pending[0])
            self.pending_reload.extend(pending[1:])

    # ---- nodes -----------------------------------------------------------------------------

    def _add_slot(self, slot_id: int) -> Slot:
        slot = Slot(slot_id, Backoff(self.config.restart))
        self.slots[slot_id] = slot
        return slot

    def drop_slot(self, slot: Slot) -> None:
        slot.cancel_restart()
        self.slots.pop(slot.id, None)
        self.mark_dirty()

    def private_fds(self) -> list[int]:
        """The supervisor's own fds: a child closes them all, so no node holds another's pipe,
        the notify socket or the control socket."""
        fds = [self.selector.fileno(), self._wake_r.fileno(), self._wake_w.fileno()]
        if self.control is not None:
            fds.extend(self.control.fds())
        notify_fd = self.notifier.fileno()
        if notify_fd is not None:
            fds.append(notify_fd)
        for proc in self._live():
            fds.extend(proc.fds())
        return fds

    def start(self, slot: Slot) -> None:
        slot.cancel_restart()
        slot.down_reason = None
        slot.generation += 1
        now = self.clock()
        try:
            proc = spawn(slot.id, slot.generation, now, app=self.app,
                         command=self.config.command, env=dict(self.config.env),
                         journal=self.journal, close_fds=self.private_fds())
        except OSError as exc:
            self.emit("node.exited", f"node {slot.id}: fork failed: {exc.strerror}",
                      priority=3, fields={"SWARMD_NODE_ID": slot.id})
            self._schedule_restart(slot, None)
            return
        slot.proc = proc
        self.selector.register(proc.pidfd, selectors.EVENT_READ, lambda: self._on_exit(slot, proc))
        self.selector.register(proc.health_fd, selectors.EVENT_READ, lambda: self._on_health(proc))
        for fd, priority in proc.output_fds.items():
            self.selector.register(fd, selectors.EVENT_READ,
                                   lambda fd=fd, priority=priority: self._on_output(proc, fd,
                                                                                    priority))
        proc.timers.append(self.timers.call_at(now + self.config.timeouts.boot,
                                               lambda: self._check_liveness(proc)))
        self.emit("node.started", f"node {slot.id} started (pid {proc.pid}, generation "
                                  f"{proc.generation})", proc)
        self.mark_dirty()

    def terminate(self, proc: NodeProcess, reason: str, now: float) -> None:
        """TERM now, KILL after timeouts.shutdown."""
        if not proc.alive or proc.term_sent_at is not None:
            if proc.stop_reason is None:
                proc.stop_reason = reason
            return
        proc.terminate(reason, now)
        proc.timers.append(self.timers.call_at(now + self.config.timeouts.shutdown,
                                               lambda: self._kill(proc)))

    def drain(self, proc: NodeProcess) -> None:
        """TSTP now, TERM after timeouts.drain unless it exits first (rolling reload)."""
        proc.state = State.DRAINING
        proc.send(signal.SIGTSTP)
        proc.timers.append(self.timers.call_at(
            self.clock() + self.config.timeouts.drain,
            lambda: self.terminate(proc, proc.stop_reason or "reload", self.clock())))

    def _kill(self, proc: NodeProcess) -> None:
        if proc.alive:
            self.emit("node.killed", f"node {proc.id} did not exit within timeouts.shutdown "
                                     f"({format_duration(self.config.timeouts.shutdown)}) "
                                     f"after TERM: KILL", proc)
            proc.kill()

    def _check_liveness(self, proc: NodeProcess) -> None:
        """Boot and report deadlines: a node silent too long is hung."""
        if not proc.alive or proc.term_sent_at is not None:
            return
        t = self.config.timeouts
        if proc.last_report_at is None:
            deadline, limit, what = proc.started_at + t.boot, t.boot, "no first report"
        else:
            deadline, limit, what = proc.last_report_at + t.report, t.report, "no report"
        now = self.clock()
        if now < deadline:
            proc.timers.append(self.timers.call_at(deadline, lambda: self._check_liveness(proc)))
            return
        name = "boot" if proc.last_report_at is None else "report"
        reason = f"hung: {what} within timeouts.{name} ({format_duration(limit)})"
        self.emit("node.hung", f"node {proc.id} is hung ({what} within timeouts.{name} = "
                               f"{format_duration(limit)}): TERM", proc,
                  fields={"SWARMD_HEALTH": "hung"})
        self.terminate(proc, reason, now)
        self.mark_dirty()

    def _on_health(self, proc: NodeProcess) -> None:
        batch = proc.read_health()
        now = self.clock()
        if batch is None:
            if proc.health_fd is not None:
                self.selector.unregister(proc.health_fd)
                proc.close_health()
            # An exiting process closes its fds a moment before it becomes a zombie: judge
            # a closed pipe only once the exit would have been seen.
            self.timers.call_at(now + CLOSED_PIPE_GRACE, lambda: self._closed_pipe(proc))
            return
        if batch.errors:
            self._protocol_error(proc, batch.errors, now)
        if batch.worst is None:
            return
        code = batch.worst
        proc.reports += batch.reports
        proc.last_report_at = now
        first = proc.first_report_at is None
        if first:
            proc.first_report_at = now
            if proc.state is State.BOOTING:
                proc.state = State.RUNNING
            if self.config.timeouts.report < self.config.timeouts.boot:  # re-arm earlier
                proc.timers.append(self.timers.call_at(now + self.config.timeouts.report,
                                                       lambda: self._check_liveness(proc)))
        if code == 0:
            if proc.healthy_since is None:
                proc.healthy_since = now
        else:
            proc.healthy_since = None
        previous, proc.code = proc.code, code
        info = self.config.health[code]
        if code != previous:
            self._health_event(proc, previous, code, first, now)
        if first:
            slot = self.slots.get(proc.id)
            if self.reload is not None and slot is not None:
                self.reload.node_reported_first(slot, code)
            self._check_ready()
        if info.restarts and proc.term_sent_at is None:
            self.terminate(proc, f"reported {info.name} ({code})", now)

    def _closed_pipe(self, proc: NodeProcess) -> None:
        if proc.alive and proc.term_sent_at is None:
            self._protocol_error(proc, ["it closed the pipe, so it can no longer report and "
                                        "will be treated as hung"], self.clock(), force=True)

    def _health_event(self, proc: NodeProcess, previous: int | None, code: int, first: bool,
                      now: float) -> None:
        info = self.config.health[code]
        fields = {"SWARMD_HEALTH_CODE": code, "SWARMD_HEALTH": info.name}
        if first:
            text = f"node {proc.id} reported {info.name} ({code}) first, " \
                   f"{now - proc.started_at:.2f}s after start"
        else:
            old = self.config.health[previous] if previous is not None else None
            text = f"node {proc.id}: {old.name if old else '?'} ({previous}) -> " \
                   f"{info.name} ({code})"
        if info.restarts:
            text += ": restart"
        self.emit("node.health", text, proc, priority=info.number, fields=fields)
        self.mark_dirty()

    def _protocol_error(self, proc: NodeProcess, errors: list[str], now: float,
                        force: bool = False) -> None:
        last = self._last_protocol_event.get(proc.pid, -PROTOCOL_ERROR_EVERY)
        if not force and now - last < PROTOCOL_ERROR_EVERY:
            return
        self._last_protocol_event[proc.pid] = now
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        self.emit("node.protocol_error", f"node {proc.id} broke the health protocol: "
                                         f"{errors[0]}{more}", proc)

    def _on_output(self, proc: NodeProcess, fd: int, priority: int) -> None:
        lines, eof = proc.read_output(fd)
        for line in lines:
            self._forward(proc, line, priority)
        if eof:
            self.selector.unregister(fd)
            proc.close_output(fd)

    def _forward(self, proc: NodeProcess, line: str, priority: int) -> None:
        if len(line) >= 3 and line[0] == "<" and line[2] == ">" and line[1] in "01234567":
            priority, line = int(line[1]), line[3:]  # sd-daemon style "<3>message"
        self.sink.node_output(proc.ref, line, priority)

    def _on_exit(self, slot: Slot, proc: NodeProcess) -> None:
        status = proc.reap()
        if status is None:
            return
        self._forget(proc)
        if slot.proc is proc:
            slot.proc = None
        self._last_protocol_event.pop(proc.pid, None)
        requested = proc.stop_reason is not None
        if proc.killed:
            priority = 4
        elif requested and proc.stop_reason in ("stop", "reload", "removed"):
            priority = 6
        else:
            priority = 6 if status.clean and self.quiet else 3
        fields: dict[str, str | int] = {"SWARMD_HEALTH": "exited"}
        if status.signal is not None:
            fields["SWARMD_EXIT_SIGNAL"] = status.signal
        else:
            fields["SWARMD_EXIT_STATUS"] = status.code if status.code is not None else 0
        why = f" ({proc.stop_reason})" if proc.stop_reason else ""
        self.emit("node.exited", f"node {proc.id} {status.describe()}{why}", proc,
                  priority=priority, fields=fields)
        self.mark_dirty()
        if self.stopping:
            return
        if self.reload is not None and self.reload.node_exited(slot, proc):
            return
        if slot.id not in self.slots:
            return
        if self.quiet:
            slot.down_reason = "quiet"
            return
        if proc.stop_reason == "removed":
            self.drop_slot(slot)
            return
        self._schedule_restart(slot, proc)

    def _forget(self, proc: NodeProcess) -> None:
        """Read what the dead process left in its pipes (its last words), then close them."""
        for timer in proc.timers:
            timer.cancel()
        proc.timers.clear()
        if proc.health_fd is not None:
            self.selector.unregister(proc.health_fd)
            proc.close_health()
        for fd, priority in list(proc.output_fds.items()):
            lines, _ = proc.read_output(fd, limit=1 << 20)
            for line in lines + proc.flush_output(fd):
                self._forward(proc, line, priority)
            self.selector.unregister(fd)
            proc.close_output(fd)
        if proc.pidfd is not None:
            self.selector.unregister(proc.pidfd)
            proc.close_pidfd()

    def _schedule_restart(self, slot: Slot, proc: NodeProcess | None) -> None:
        now = self.clock()
        healthy_for = now - proc.healthy_since if proc and proc.healthy_since else None
        delay = slot.backoff.record_failure(healthy_for)
        if delay is None:
            limit = self.config.restart.give_up_after
            self.emit("node.crash_loop", f"node {slot.id} failed {limit} times in a row "
                      f"(restart.give_up_after): giving up, stopping swarmd with exit status 1",
                      proc, fields={"SWARMD_HEALTH": "crash_loop"} | (
                          {} if proc else {"SWARMD_NODE_ID": slot.id}))
            self.begin_stop(f"node {slot.id} is in a crash loop", exit_code=1)
            return
        self.restarts += 1
        slot.restarts += 1
        self.emit("node.restarting", f"node {slot.id} restarts in {format_duration(delay)} "
                  f"(failure {slot.backoff.failures} in a row)", proc,
                  fields={"SWARMD_RESTART_DELAY_USEC": int(delay * 1_000_000)}
                  | ({} if proc else {"SWARMD_NODE_ID": slot.id}))
        if delay <= 0:
            self.start(slot)
        else:
            slot.down_reason = "restarting"
            slot.restart_timer = self.timers.call_at(now + delay, lambda: self.start(slot))
        self.mark_dirty()

    # ---- readiness, watchdog, status -------------------------------------------------------

    def _check_ready(self) -> None:
        if self.ready_sent:
            return
        if all(s.proc is not None and s.proc.first_report_at is not None
               for s in self.slots.values()):
            self._send_ready(f"every node reported its first health "
                             f"({self.clock() - self.started_monotonic:.2f}s after start)")

    def _boot_deadline(self) -> None:
        if not self.ready_sent and not self.stopping:
            waiting = [s.id for s in self.slots.values()
                       if s.proc is None or s.proc.first_report_at is None]
            self._send_ready(f"timeouts.boot passed; still waiting for node(s) {waiting}")

    def _send_ready(self, why: str) -> None:
        self.ready_sent = True
        text = self.status_text()
        self.notifier.ready(text)
        self.emit("swarmd.ready", f"ready: {why}; {text}")

    def _watchdog(self, when: float) -> None:
        """WATCHDOG=1 from the loop itself, every WATCHDOG_USEC/2, also during stop."""
        self.notifier.watchdog()
        interval = self.notifier.watchdog_interval or 0
        now = self.clock()
        upcoming = when + interval
        if upcoming <= now:  # the loop fell behind: keep the rhythm from now on
            upcoming = now + interval
        self.timers.call_at(upcoming, lambda: self._watchdog(upcoming))

    def _extend_timeout(self) -> None:
        if (self.stopping and self._live()) or self.reload is not None:
            self.notifier.extend_timeout(EXTEND_EVERY * 3)
            self.timers.call_at(self.clock() + EXTEND_EVERY, self._extend_timeout)

    def mark_dirty(self) -> None:
        self._dirty = True

    def status_text(self) -> str:
        return status_text(self.rows(), self.restarts, mode=self.mode())

    def mode(self) -> str:
        if self.stopping:
            return "stopping"
        if self.reload is not None:
            return f"reloading ({self.reload.progress})"
        if self.quiet:
            return "quiet"
        return "running" if self.ready_sent else "starting"

    def rows(self) -> list[NodeRow]:
        now, wall = self.clock(), time.time()
        rows = []
        for slot in sorted(self.slots.values(), key=lambda s: s.id):
            proc = slot.proc
            if proc is None:
                rows.append(NodeRow(slot.id, None, slot.down_reason or "down", None, None,
                                    slot.restarts, None, max(slot.generation, 0)))
                continue
            code = proc.code
            rows.append(NodeRow(
                slot.id, proc.pid, proc.state.value, code,
                self.config.health[code].name if code is not None else None,
                slot.restarts, wall - (now - proc.started_at), proc.generation))
        return rows

    def emit(self, kind: str, message: str, proc: NodeProcess | None = None, *,
             priority: int | None = None, fields: dict[str, str | int] | None = None) -> None:
        self.sink.emit(Event(kind, message, proc.ref if proc else None, priority,
                             dict(fields or {})))

    # ---- last resort -----------------------------------------------------------------------

    def _emergency_stop(self) -> None:
        """The loop itself failed: TERM every node, KILL after the timeout, reap them all."""
        now = self.clock()
        procs = self._live()
        for proc in procs:
            proc.terminate("supervisor failed", now)
        deadline = now + self.config.timeouts.shutdown
        for proc in procs:
            while proc.alive and proc.reap() is None:
                if self.clock() >= deadline:
                    proc.kill()
                    os.waitpid(proc.pid, 0)
                    break
                time.sleep(0.05)  # the selector may be what failed: plain polling here
