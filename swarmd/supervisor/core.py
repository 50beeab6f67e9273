"""The supervision loop: signals, timers and node events -> decisions.

One thread, one epoll (swarmd/loop/poller.py): every node's health pipe, output pipes and pidfd, the
signal wake-up fd and the control socket. Signal handlers only queue; the loop dispatches each to
one `handle_<signal>` method. Deadlines are timers, so the loop sleeps exactly until the next one.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from swarmd import config as config_module
from swarmd.config import Config, ConfigError
from swarmd.control import ControlServer
from swarmd.loop.timers import Timer
from swarmd.node.apps import PreloadError, load_app
from swarmd.node.child import prepare_supervisor
from swarmd.supervisor.fleet import Fleet
from swarmd.supervisor.reload import RollingReload, Waiter
from swarmd.supervisor.status import NodeRow, counts_as_healthy, summary_text
from swarmd.systemd.events import Sink
from swarmd.systemd.notify import Notifier

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN)
MAX_WAIT = 3600.0  # seconds the loop sleeps at most, even when the next deadline is later
EXTEND_EVERY = 2.0  # seconds between EXTEND_TIMEOUT_USEC while a stop or reload progresses
# STATUS= goes out at the end of the turn that changed it, then at most once per STATUS_HOLD:
# changes within that time are sent together, as the latest text, when it is over. A start of
# 256 nodes is a few messages to PID 1 instead of hundreds; a lone change goes out at once.
STATUS_HOLD = 0.05


class Supervisor(Fleet):
    """The loop, and the decisions about the whole fleet."""

    def __init__(self, config: Config, *, sink: Sink | None = None,
                 notifier: Notifier | None = None) -> None:
        super().__init__(config, sink)
        self.notifier = notifier or Notifier()
        self.stop_reason = ""
        self.exit_code = 0
        self.ready_sent = False
        self._first_reports = 0  # first reports seen before READY=1, by any node
        self.pending_reload: list[Waiter] = []
        self.control: ControlServer | None = None
        self.started_monotonic = time.monotonic()
        self._signals: deque[int] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._extending: Timer | None = None
        self._status_timer: Timer | None = None
        self._status_sent_at = -STATUS_HOLD

    # ---- lifecycle -------------------------------------------------------------------------

    def preload(self) -> None:
        """Import the app before forking (copy-on-write sharing); a broken one is refused."""
        self.app = load_app(self.config)

    def run(self) -> int:
        """Start every node and supervise until stopped; returns the exit code."""
        prepare_supervisor()
        self._install_signals()
        try:
            if self.app is None:
                self.preload()
            self.emit("swarmd.started", f"starting {self.config.nodes} node(s) from "
                      f"{self.config.path or 'defaults'}")
            self._held = []  # the fleet is forked first, its node.started entries follow
            try:
                for slot_id in self.config.node_ids:
                    self.start(self.add_slot(slot_id), batch=True)
            finally:
                self.write_held()
            self.timers.call_at(self.clock() + self.config.timeouts.boot, self._boot_deadline)
            if self.notifier.watchdog_interval:
                self._watchdog(self.clock())
            while not (self.stopping and not self.live()):
                self._turn()
            if self._dirty:
                self._send_status()
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
        # capped: epoll refuses timeouts beyond ~24 days, and a far deadline costs nothing
        timeout = None if deadline is None else min(MAX_WAIT, max(0.0, deadline - self.clock()))
        self.poller.poll(timeout, between=self._run_overdue_timers)
        if self._signals:
            self._dispatch_signals()
        self.timers.run_due(self.clock())
        if self._dirty and self._status_timer is None:
            now = self.clock()
            if now - self._status_sent_at >= STATUS_HOLD:
                self._send_status()
            else:
                self._status_timer = self.timers.call_at(self._status_sent_at + STATUS_HOLD,
                                                         self._send_status)

    def _send_status(self) -> None:
        self._status_timer = None
        self._dirty = False
        if self.notifier.status(self.status_text()):
            self._status_sent_at = self.clock()

    def _run_overdue_timers(self) -> None:
        """Between two ready fds: a deadline that passed while a long batch of reads ran (a
        flood) fires now, not after the whole batch, so the watchdog keeps its rhythm."""
        self.timers.run_due(self.clock())

    def attach_control(self, server: ControlServer) -> None:
        self.control = server
        server.register(self.poller)

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
            reply({"ok": True, "message": f"quiet: TSTP sent to {len(self.live())} node(s)"})
        else:
            reply({"ok": False, "error": f"unknown command {command!r}"})

    def _close(self) -> None:
        if self.control is not None:
            self.control.close()
        signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.poller.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- signals ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, lambda signum, _frame: self._signals.append(signum))
        self.poller.register(self._wake_r, self._drain_wakeup)

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
        for proc in self.live():
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
        self.emit("swarmd.stopping", f"stopping: {reason}; TERM to {len(self.live())} node(s)")
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
        self.emit("swarmd.quiet", f"quiet: TSTP to {len(self.live())} node(s); nothing is "
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
            app = load_app(new)
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
                self.add_slot(slot_id)
            self.slots[slot_id].down_reason = None
        self.reload = RollingReload(self, wanted, removed, waiters)
        self._extend_timeout()
        self.reload.step()

    def reload_finished(self, reload: RollingReload, ok: bool, message: str) -> None:
        if self.reload is reload:
            self.reload = None
        self._reload_done(ok, message, reload.waiters)

    def _reload_done(self, ok: bool, message: str, waiters: list[Waiter]) -> None:
        if not self.stopping:  # after STOPPING=1, READY=1 would say the opposite
            self.notifier.ready(self.status_text())
        self.emit("swarmd.reloaded" if ok else "swarmd.reload_failed", message)
        for waiter in waiters:
            waiter(ok, message)
        self.mark_dirty()
        if self.pending_reload and not self.stopping:
            pending, self.pending_reload = self.pending_reload, []
            self.request_reload(pending[0])
            self.pending_reload.extend(pending[1:])

    def private_fds(self) -> list[int]:
        """The supervisor's own fds: a child closes them all, so no node holds another's pipe,
        the notify socket or the control socket. Every node fd that is open is in the poller
        (unregistered right before it is closed), so this never walks the fleet: a walk per
        fork touches every node's objects, each page of them a copy-on-write fault after the
        last fork (O(N^2) faults for a fleet's start)."""
        fds = self.poller.fds()
        fds += (self.poller.fileno(), self._wake_r.fileno(), self._wake_w.fileno())
        if self.control is not None:
            fds.extend(self.control.fds())
        notify_fd = self.notifier.fileno()
        if notify_fd is not None:
            fds.append(notify_fd)
        return fds

    # ---- readiness, watchdog, status -------------------------------------------------------

    def check_ready(self) -> None:
        """After each first report: READY=1 once every slot's node has reported."""
        if self.ready_sent:
            return
        self._first_reports += 1
        if self._first_reports < len(self.slots):
            return  # fewer first reports than slots: no need to look at each (O(N^2) at start)
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
        """EXTEND_TIMEOUT_USEC every EXTEND_EVERY while a stop or reload progresses; systemd's
        own timeout applies again as soon as the loop stops sending it."""
        if self._extending is not None:
            return
        self._extend_tick()

    def _extend_tick(self) -> None:
        self._extending = None
        if (self.stopping and self.live()) or self.reload is not None:
            self.notifier.extend_timeout(EXTEND_EVERY * 3)
            self._extending = self.timers.call_at(self.clock() + EXTEND_EVERY,
                                                  self._extend_tick)

    def status_text(self) -> str:
        """The STATUS= line; computed after every change, so without building the rows."""
        healthy = sum(1 for slot in self.slots.values() if slot.proc is not None
                      and counts_as_healthy(slot.proc.code, slot.proc.state.value))
        return summary_text(healthy, len(self.slots), self.restarts, self.mode())

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
        return [slot.row(self.config.health, now, wall)
                for slot in sorted(self.slots.values(), key=lambda s: s.id)]

    # ---- last resort -----------------------------------------------------------------------

    def _emergency_stop(self) -> None:
        """The loop itself failed: TERM every node, KILL after the timeout, reap them all."""
        now = self.clock()
        procs = self.live()
        for proc in procs:
            proc.terminate("supervisor failed", now)
        deadline = now + self.config.timeouts.shutdown
        for proc in procs:
            while proc.alive and proc.reap() is None:
                if self.clock() >= deadline:
                    proc.kill()
                    os.waitpid(proc.pid, 0)
                    break
                time.sleep(0.05)  # the poller may be what failed: plain polling here
