"""The supervision loop: signals, timers and node events -> decisions about the whole fleet.

One thread, one epoll (swarmd/loop/poller.py): every node's health pipe, output pipes and pidfd,
a deploy's candidate, the signal wake-up fd and the control socket. Signal handlers only queue;
the loop dispatches each to one `handle_<signal>` method. Deadlines are timers, so the loop
sleeps exactly until the next one. The supervisor owns a Fleet (the slots and their nodes) and,
while one runs, a Deploy; both tell it what happened through narrow callbacks.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from swarmd import __version__
from swarmd.config import Config, to_data
from swarmd.control import ControlServer, Reply
from swarmd.loop.poller import Poller
from swarmd.loop.timers import Timer, Timers
from swarmd.node import titles
from swarmd.node.apps import PreloadError, load_app
from swarmd.node.heartbeat import BeatTable
from swarmd.node.process import NodeProcess, StopReason
from swarmd.node.spawn import Forked, NodeLimits, Recipe, become_subreaper, prepare_supervisor
from swarmd.supervisor.fleet import Fleet
from swarmd.supervisor.recycle import Recycle
from swarmd.supervisor.resources import Resources, children
from swarmd.supervisor.signals import STOP_SIGNALS, SignalQueue
from swarmd.supervisor.slot import Slot
from swarmd.supervisor.status import NodeRow, summary_text
from swarmd.supervisor.telemetry import Telemetry
from swarmd.supervisor.upkeep import Upkeep
from swarmd.systemd.events import JournalSink, Sink, default_sink
from swarmd.systemd.notify import Notifier

MAX_WAIT = 3600.0  # seconds the loop sleeps at most, even when the next deadline is later
EXTEND_EVERY = 2.0  # seconds between EXTEND_TIMEOUT_USEC while a stop or deploy progresses
# STATUS= goes out at the end of the turn that changed it, then at most once per STATUS_HOLD:
# changes within that time are sent together, as the latest text, when it is over. A start of
# 256 nodes is a few messages to PID 1 instead of hundreds; a lone change goes out at once.
STATUS_HOLD = 0.05
STRAY_REAP_DELAY = 0.1  # after a SIGCHLD: reap children nobody knows (orphans we inherited)

if TYPE_CHECKING:  # deploys come with a HUP: their modules load then, not at every start
    from swarmd.supervisor.candidate import Candidate
    from swarmd.supervisor.deploy import Deploy, Outcome

Waiter = Reply | None  # a `swarmd reload` client to answer, or None for a plain HUP


class Supervisor:
    """The loop, and the decisions about the whole fleet."""

    def __init__(self, config: Config, *, sink: Sink | None = None,
                 notifier: Notifier | None = None, limits: NodeLimits | None = None,
                 signals: SignalQueue | None = None, exec_argv: list[str] | None = None,
                 entry: list[str] | None = None, resources: Resources | None = None,
                 beats: BeatTable | None = None) -> None:
        self.clock = time.monotonic
        self.timers = Timers()
        self.poller = Poller()
        self.sink = sink or default_sink()
        self.journal = isinstance(self.sink, JournalSink)
        self.notifier = notifier or Notifier()
        self.limits = limits or NodeLimits(None, None)
        self.signals = signals or SignalQueue()
        self.exec_argv = exec_argv or list(getattr(sys, "orig_argv", []))
        self._entry = entry
        self.resources = Resources.discover() if resources is None else resources
        self.beats = beats  # the fleet's heartbeat table (swarmd.node.heartbeat), if any
        self.telemetry = Telemetry(config.metrics)
        self.fleet = Fleet(config, self._recipe(config, None), sink=self.sink, owner=self,
                           poller=self.poller, timers=self.timers, clock=self.clock,
                           resources=self.resources, telemetry=self.telemetry,
                           beats=self.beats)
        self.upkeep = Upkeep(self.fleet, self.resources, timers=self.timers, clock=self.clock,
                             emit=self.emit, busy=self._busy)
        self.deploy: Deploy | None = None
        self.pending_deploy: list[Waiter] | None = None  # a deploy asked for during one
        self.last_deploy: Outcome | None = None
        self.import_seconds = 0.0  # how long the app's import took (in the loader)
        self.stop_reason = ""
        self.exit_code = 0
        self.ready_sent = False
        self._first_reports = 0  # first reports seen before READY=1, by any node
        self.control: ControlServer | None = None
        self.started_monotonic = self.clock()
        self._extending: Timer | None = None
        self._status_timer: Timer | None = None
        self._status_sent_at = -STATUS_HOLD
        self._strays: Timer | None = None
        self._ended: dict[int, Candidate] = {}  # pidfd -> candidate, until reaped

    def _recipe(self, config: Config, app: Any) -> Recipe:
        return Recipe(app=app, command=config.command, env=dict(config.env),
                      journal=self.journal, limits=self.limits, supervisor_pid=os.getpid(),
                      output=config.output, cgroups=self.resources.base, app_name=config.app,
                      beats=self.beats)

    @property
    def config(self) -> Config:
        return self.fleet.config

    @property
    def stopping(self) -> bool:
        return self.fleet.stopping

    # ---- lifecycle -------------------------------------------------------------------------

    def preload(self) -> None:
        """Import the app before forking (copy-on-write sharing), with collection off while
        it runs and the heap frozen after it (see spawn.spawn); a loader process proved the
        import first (swarmd/candidate/), so a failure here is rare: PreloadError."""
        config = self.config
        enabled = gc.isenabled()
        gc.disable()
        try:
            app = load_app(config)
        finally:
            gc.freeze()
            if enabled:
                gc.enable()
        self.fleet.versions[self.fleet.current] = self.fleet.versions[
            self.fleet.current]._replace(recipe=self._recipe(config, app))

    def _prepare(self, nofile: tuple[int, int] | None = None) -> None:
        self.limits = prepare_supervisor(nofile)
        recipe = self.fleet.versions[self.fleet.current].recipe
        assert recipe is not None
        self.fleet.versions[self.fleet.current] = self.fleet.versions[
            self.fleet.current]._replace(recipe=recipe._replace(limits=self.limits))
        become_subreaper()  # a no-op when launch.start did it already
        # before any fork, so that no node imports setproctitle itself
        titles.set_title(titles.supervisor_title(self.config.path or "(defaults)"))

    def _install_signals(self) -> None:
        if not self.signals.installed:
            self.signals.install()
        self.poller.register(self.signals.wake_fd, self.signals.drain_wakeup)
        self._attach_sink()

    def _attach_sink(self) -> None:
        """The log sink writes from the loop, on write-readiness, never waiting for a reader
        (swarmd/loop/outbox.py)."""
        attach = getattr(self.sink, "attach", None)
        if attach is not None:
            attach(self.poller)

    def run(self, forked: list[Forked] | None = None) -> int:
        """Start every node (`forked`: those the first start's loader forked already) and
        supervise until stopped; returns the exit code."""
        self._prepare()
        self._install_signals()
        try:
            recipe = self.fleet.versions[self.fleet.current].recipe
            if recipe is not None and recipe.app is None and self.config.command is None:
                self.preload()  # not done by the caller (swarmd run does it before the socket)
            self.emit("swarmd.started", f"starting {self.config.nodes} node(s) from "
                      f"{self.config.path or 'defaults'} (swarmd {__version__})")
            self.fleet.start_all(forked or [])
            self._open_metrics()
            self.timers.call_at(self.clock() + self.config.timeouts.boot, self._boot_deadline)
            return self._supervise()
        finally:
            self._close()

    def resume(self, state: dict[str, Any]) -> int:
        """Go on where the supervisor that re-executed into this code left off."""
        self._prepare(tuple(state["limits"]["nofile"]) if state["limits"]["nofile"] else None)
        self.import_seconds = float(state.get("import_seconds", 0.0))
        if self.config.command is None:
            if self.config.preload:
                self._preload_after_handover()
            else:
                self.preload()  # no import: each node imports the app itself
        self._restore(state)
        self._open_metrics(self.telemetry.restore(state.get("telemetry")))
        self._install_signals()
        # a child that ended (the candidate) may have told the old code only: reap it now
        self.handle_chld()
        if self.ready_sent:
            self.upkeep.begin()
        try:
            outcome = self.last_deploy
            message = outcome.message if outcome else "reloaded"
            self.emit("swarmd.reloaded", message,
                      fields={"SWARMD_VERSION": __version__,
                              "SWARMD_PREVIOUS_VERSION": state.get("version", "?")})
            self.notifier.ready(self.status_text())
            # the `swarmd reload` clients that waited across the exec, by their fds
            waiting = {reply.fd: reply for _, reply in self.control.adopted_requests()} \
                if self.control is not None else {}
            for fd in state.get("answer", []):
                if fd in waiting:
                    waiting.pop(fd)({"ok": True, "message": message})
            pending = state.get("pending")
            if pending is not None:
                self.pending_deploy = [waiting.pop(fd) for fd in pending if fd in waiting] \
                    or [None]
            for reply in waiting.values():  # not ours to know: never left without an answer
                reply({"ok": False, "message": "the supervisor re-executed itself meanwhile; "
                                               "ask again"})
            if self.pending_deploy is not None:
                self._run_pending_deploy()
            return self._supervise()
        finally:
            self._close()

    def _preload_after_handover(self) -> None:
        """The new app, into the new code: the candidate proved it imports, in
        `import_seconds`; systemd's watchdog is told to wait that long (and more) meanwhile."""
        interval = self.notifier.watchdog_interval
        self.notifier.watchdog()
        extended = interval is not None and self.import_seconds > interval / 2
        if extended:
            assert interval is not None
            self.notifier.watchdog_timeout(2 * interval + 3 * self.import_seconds + 5)
        try:
            self.preload()
        except PreloadError as exc:
            # changed again since the candidate imported it: nodes import it themselves
            self.emit("swarmd.reload_failed", f"after the deploy, the supervisor could not "
                      f"import the app again ({exc}); new nodes import it themselves",
                      priority=3)
            self.fleet.versions[self.fleet.current] = self.fleet.versions[
                self.fleet.current]._replace(recipe=self._recipe(self.config, self.config.app))
        finally:
            self.notifier.watchdog()
            if extended:
                assert interval is not None
                self.notifier.watchdog_timeout(2 * interval)

    def _supervise(self) -> int:
        try:
            if self.notifier.watchdog_interval:
                self._watchdog(self.clock())
            while not (self.stopping and not self.fleet.live()):
                self._turn()
            if self.fleet.dirty:
                self._send_status()
            left = self._kill_leftovers()
            self.emit("swarmd.stopped", f"stopped ({self.stop_reason}), exit status "
                      f"{self.exit_code}" + (f"; {left} process(es) the nodes left behind "
                                             "were killed" if left else ""))
        except Exception as exc:
            self.exit_code = 1
            self.emit("swarmd.stopped", f"supervisor failed: {type(exc).__name__}: {exc}; "
                      f"stopping every node", priority=2)
            self._emergency_stop()
            raise
        return self.exit_code

    def scale(self, count: Any) -> tuple[bool, str]:
        """`swarmd scale N`: slots added (started at once) or the highest removed (TSTP, drain,
        TERM), every other node untouched. Runtime only: the next deploy takes `nodes` from
        the config again."""
        from swarmd.config.validate import MAX_NODES

        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_NODES:
            return False, f"scale takes a number of nodes from 1 to {MAX_NODES}, got {count!r}"
        if self.stopping:
            return False, "swarmd is stopping"
        if self.deploy is not None:
            return False, "a deploy is running: scale once it is done"
        if self.fleet.quiet:
            return False, "swarmd is quiet: nothing starts until a reload, which scales back " \
                          "to the config"
        fleet = self.fleet
        going = [slot for slot in fleet.slots.values() if slot.proc is not None
                 and slot.proc.stop_reason is StopReason.REMOVED]
        staying = sorted(slot_id for slot_id in fleet.slots
                         if fleet.slots[slot_id] not in going)
        before = len(staying)
        if count > before:
            free = (slot_id for slot_id in range(self.config.node_id_offset, 1 << 31)
                    if slot_id not in fleet.slots)
            for slot_id in [next(free) for _ in range(count - before)]:
                slot = fleet.add_slot(slot_id)
                self.resources.add_slot(slot_id, self.config.limits.memory_max)
                fleet.start(slot)
        else:
            for slot_id in staying[count:]:
                slot = fleet.slots[slot_id]
                if slot.proc is None:
                    fleet.drop_slot(slot)
                else:
                    fleet.drain(slot.proc, StopReason.REMOVED)
        fleet.mark_dirty()
        configured = self.config.nodes
        note = "" if count == configured else (f"; the config says {configured}: the next "
                                               f"deploy scales back to it")
        message = f"scaled from {before} to {count} node(s){note}"
        self.emit("swarmd.scaled", message, fields={"SWARMD_NODES": count})
        return True, message

    def _kill_leftovers(self) -> int:
        """Every node is gone: what is still a child of ours is something a node left (a
        daemon it double-forked, orphaned to us), which no stop may leave running. Under a
        delegated cgroup each went with its node's group already; this is the fallback."""
        count = 0
        for pid in children():
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    continue  # a zombie: reaped, nothing ran
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                count += 1
            except (ProcessLookupError, ChildProcessError):
                pass
        return count

    def _turn(self) -> None:
        deadline = self.timers.next_deadline()
        # capped: epoll refuses timeouts beyond ~24 days, and a far deadline costs nothing
        timeout = None if deadline is None else min(MAX_WAIT, max(0.0, deadline - self.clock()))
        self.poller.poll(timeout, between=self._run_overdue_timers)
        if self.signals.pending:
            self._dispatch_signals()
        self.timers.run_due(self.clock())
        if self.fleet.dirty and self._status_timer is None:
            now = self.clock()
            if now - self._status_sent_at >= STATUS_HOLD:
                self._send_status()
            else:
                self._status_timer = self.timers.call_at(self._status_sent_at + STATUS_HOLD,
                                                         self._send_status)

    def _send_status(self) -> None:
        self._status_timer = None
        self.fleet.dirty = False
        if self.notifier.status(self.status_text()):
            self._status_sent_at = self.clock()

    def _run_overdue_timers(self) -> None:
        """Between two ready fds: a deadline that passed while a long batch of reads ran (a
        flood) fires now, not after the whole batch, so the watchdog keeps its rhythm."""
        self.timers.run_due(self.clock())

    def _close(self) -> None:
        self.upkeep.close()
        self.telemetry.close()
        if self.control is not None:
            self.control.close()
        self.signals.uninstall()
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()  # what is queued goes out, within a second
        self.poller.close()
        self.signals.close()

    # ---- metrics ---------------------------------------------------------------------------

    def _open_metrics(self, sock: Any = None) -> None:
        self.telemetry.open(self._metrics_sample, poller=self.poller, timers=self.timers,
                            clock=self.clock, emit=self.emit, sock=sock)

    def _metrics_sample(self) -> Any:
        """The fleet as the exposition shows it (swarmd.metrics.exposition.FleetSample)."""
        from swarmd.metrics.exposition import FleetSample, NodeSample

        telemetry, resources = self.telemetry, self.resources
        self.fleet.take_all_beats()
        nodes = []
        for slot_id in sorted(self.fleet.slots):
            slot = self.fleet.slots[slot_id]
            proc = slot.proc
            counts = telemetry.counts(slot_id)
            figures = resources.figures(slot_id)
            nodes.append(NodeSample(
                id=slot_id, up=proc is not None and proc.first_report_at is not None,
                health_code=proc.code if proc is not None else None,
                reports=counts.reports + (proc.reports if proc is not None else 0),
                restarts=counts.restarts, recycles=counts.recycles, exits=counts.exits,
                cpu_seconds=resources.cpu_seconds(slot_id, counts.cpu_seconds),
                memory_bytes=figures.memory if proc is not None else None,
                generation=max(slot.generation, 0)))
        return FleetSample(__version__, nodes, telemetry.reloads,
                           telemetry.lateness if self.notifier.watchdog_interval else None)

    # ---- the control socket ----------------------------------------------------------------

    def attach_control(self, server: ControlServer) -> None:
        self.control = server
        server.register(self.poller, self.timers, clock=self.clock)

    def handle_request(self, request: dict[str, Any], reply: Reply) -> None:
        """A control-socket request: status, reload (answered when done) or quiet."""
        command = request.get("command")
        if command == "status":
            self.fleet.take_all_beats()
            now = time.time()
            deploy = (self.deploy.in_progress() if self.deploy is not None
                      else self.last_deploy)
            reply({"ok": True, "pid": os.getpid(), "version": __version__,
                   "status": self.status_text(), "mode": self.mode(),
                   "restarts": self.fleet.restarts, "config": self.config.path,
                   "cgroups": self.resources.enabled, "metrics": self.telemetry.where(),
                   "configured_nodes": self.config.nodes,
                   "deploy": deploy.to_dict() if deploy else None,
                   "nodes": [row.to_dict(now) for row in self.rows()]})
        elif command == "reload":
            self.request_deploy(reply)
        elif command == "scale":
            ok, message = self.scale(request.get("nodes"))
            reply({"ok": ok, "message" if ok else "error": message})
        elif command == "quiet":
            self.enter_quiet()
            reply({"ok": True, "message": f"quiet: TSTP sent to {len(self.fleet.live())} "
                                          f"node(s)"})
        else:
            reply({"ok": False, "error": f"unknown command {command!r}"})

    # ---- signals ---------------------------------------------------------------------------

    def _dispatch_signals(self) -> None:
        pending = self.signals.pending
        while pending:
            signum = pending.popleft()
            if signum in STOP_SIGNALS:
                self.handle_stop(signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                self.handle_hup()
            elif signum == signal.SIGTSTP:
                self.handle_tstp()
            elif signum == signal.SIGTTIN:
                self.handle_ttin()
            elif signum == signal.SIGCHLD:
                self.handle_chld()

    def handle_stop(self, why: str) -> None:
        self.begin_stop(f"{why} received")

    def handle_hup(self) -> None:
        self.request_deploy(None)

    def handle_tstp(self) -> None:
        self.enter_quiet()

    def handle_ttin(self) -> None:
        """Stacks: the supervisor's own threads in one entry, and every Python node's (each
        writes its own); a command node is left alone (TTIN's default would stop it)."""
        import threading
        import traceback

        frames = sys._current_frames()
        parts = [f'Thread "{thread.name}" ({thread.ident}):\n'
                 + "".join(traceback.format_stack(frames[thread.ident]))
                 for thread in threading.enumerate()
                 if thread.ident is not None and thread.ident in frames]
        nodes = [proc for proc in self.fleet.live() if not proc.is_command]
        self.emit("swarmd.stacks", f"supervisor stacks of {len(parts)} thread(s) (SIGTTIN; "
                  f"{len(nodes)} node(s) write theirs):\n" + "\n".join(parts))
        for proc in nodes:
            proc.send(signal.SIGTTIN)

    def handle_chld(self) -> None:
        """A child ended: nodes and candidates are reaped through their pidfds; this reaps
        the rest (a node's orphans, which a subreaper inherits), a moment later, in one go."""
        if self._strays is None:
            self._strays = self.timers.call_at(self.clock() + STRAY_REAP_DELAY,
                                               self._reap_strays)

    def _reap_strays(self) -> None:
        self._strays = None
        if self.deploy is not None and self.deploy.candidate is not None:
            self.deploy._on_message()  # a new node's pid first: it may be ours already
        known = {proc.pid for proc in self.fleet.live()}
        known.update(candidate.pid for candidate in self._ended.values())
        if self.deploy is not None and self.deploy.candidate is not None:
            known.add(self.deploy.candidate.pid)
        live = {slot.id: slot.proc.generation for slot in self.fleet.slots.values()
                if slot.proc is not None}
        for pid in children():
            if pid in known:
                continue
            if self.resources.stray_of_a_gone_node(pid, live):
                try:  # it outlived its node (double-forked away before the node's clean-up)
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    # ---- decisions -------------------------------------------------------------------------

    def begin_stop(self, reason: str, exit_code: int | None = None) -> None:
        if exit_code is not None:
            self.exit_code = max(self.exit_code, exit_code)
        if self.stopping:
            return
        self.stop_reason = reason
        self.upkeep.take_over()
        self.notifier.stopping()
        self.emit("swarmd.stopping", f"stopping: {reason}; TERM to {len(self.fleet.live())} "
                                     f"node(s)")
        if self.deploy is not None:
            self.deploy.abort("the supervisor is stopping")
        self._answer_pending(False, "the supervisor is stopping")
        self.fleet.stop_all()
        self._extend_timeout()
        self.fleet.mark_dirty()

    def enter_quiet(self) -> None:
        if self.stopping:
            return
        if self.deploy is not None:
            self.deploy.abort("quieted during the deploy")
        self._answer_pending(False, "quieted: the deploy asked for meanwhile will not run")
        self.upkeep.take_over()
        self.fleet.quiet_all()
        self.emit("swarmd.quiet", f"quiet: TSTP to {len(self.fleet.live())} node(s); nothing "
                                  f"is restarted until a reload or stop")

    def request_deploy(self, waiter: Waiter) -> None:
        """HUP or `swarmd reload`: a deploy (or, with `reload: quiet`, a quiet); during one,
        at most one more follows, with the files as they are then."""
        if self.stopping:
            if waiter is not None:
                waiter({"ok": False, "message": "the supervisor is stopping"})
            return
        if self.deploy is not None or not self.ready_sent:  # after this one, or after READY=1
            if self.pending_deploy is None:
                self.pending_deploy = []
            self.pending_deploy.append(waiter)
            return
        self.notifier.reloading()
        if self.config.reload == "quiet":
            self.emit("swarmd.reloading", "reloading: quiet (reload: quiet)")
            self.enter_quiet()
            self._reloaded(True, "reloaded: every node quieted (reload: quiet)", [waiter])
            return
        if self.config.path is None:
            self._reloaded(False, "no config file to reload (started with the defaults)",
                           [waiter])
            return
        from swarmd.supervisor.candidate import entry_argv
        from swarmd.supervisor.deploy import Deploy

        self.emit("swarmd.reloading", f"reloading {self.config.path}: loading the new version")
        self.upkeep.take_over()
        self.deploy = Deploy(self.fleet, self, config_path=self.config.path,
                             entry=self._entry or entry_argv(), journal=self.journal,
                             limits=self.limits, cgroups=self.resources.base)
        self._deploy_waiters: list[Waiter] = [waiter]
        self.deploy.start()
        self._extend_timeout()

    def deploy_changed(self) -> None:
        self.fleet.mark_dirty()

    def collect(self, candidate: Candidate) -> None:
        """Reap a candidate the deploy is done with once its pidfd says it ended."""
        if candidate.reap() is not None:
            candidate.close_pidfd()
            return
        self._ended[candidate.pidfd] = candidate
        self.poller.register(candidate.pidfd, lambda: self._reap_candidate(candidate))

    def _reap_candidate(self, candidate: Candidate) -> None:
        if candidate.reap() is None:
            return
        self.poller.unregister(candidate.pidfd)
        self._ended.pop(candidate.pidfd, None)
        candidate.close_pidfd()

    def deploy_finished(self, outcome: Outcome) -> None:
        from swarmd.supervisor.deploy import Result

        self.deploy = None
        self.last_deploy = outcome
        self.telemetry.deployed(outcome.result.name.lower())
        waiters, self._deploy_waiters = self._deploy_waiters, []
        if outcome.result is Result.DEPLOYED and not self.stopping:
            self._hand_over(outcome, waiters)
            return  # the exec failed: _hand_over answered and goes on with the old code
        if outcome.result is Result.ROLLED_BACK:
            self.emit("swarmd.deploy_failed", outcome.message, priority=3,
                      fields={"SWARMD_DEPLOY_RESULT": "rolled_back"})
        ok = outcome.result is Result.DEPLOYED
        if outcome.result is Result.ABORTED:
            for waiter in waiters:
                if waiter is not None:
                    waiter({"ok": False, "message": outcome.message})
            self.fleet.mark_dirty()
            return
        self._reloaded(ok, outcome.message, waiters,
                       kind=None if outcome.result is Result.ROLLED_BACK else
                       ("swarmd.reloaded" if ok else "swarmd.reload_failed"))
        self._run_pending_deploy()
        self.upkeep.advance()

    def _reloaded(self, ok: bool, message: str, waiters: list[Waiter],
                  kind: str | None = "") -> None:
        if not self.stopping:  # after STOPPING=1, READY=1 would say the opposite
            self.notifier.ready(self.status_text())
        if kind == "":
            kind = "swarmd.reloaded" if ok else "swarmd.reload_failed"
        if kind:
            self.emit(kind, message)
        for waiter in waiters:
            if waiter is not None:
                waiter({"ok": ok, "message": message})
        self.fleet.mark_dirty()

    def _run_pending_deploy(self) -> None:
        if self.pending_deploy is None or self.stopping:
            return
        pending, self.pending_deploy = self.pending_deploy, None
        self.request_deploy(pending[0])
        if self.deploy is not None:
            self._deploy_waiters.extend(pending[1:])
        else:
            for waiter in pending[1:]:
                if waiter is not None:
                    waiter({"ok": False, "message": "the deploy could not start"})

    def _answer_pending(self, ok: bool, message: str) -> None:
        pending, self.pending_deploy = self.pending_deploy or [], None
        for waiter in pending:
            if waiter is not None:
                waiter({"ok": ok, "message": message})

    def _hand_over(self, outcome: Outcome, waiters: list[Waiter]) -> None:
        """Re-execute into the swarmd code on disk, same PID, handing everything over."""
        from swarmd.supervisor import handover

        self.fleet.write_held()
        state = self._state(outcome, waiters)
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()  # what is queued goes out (within a second) before the exec
        try:
            handover.execute(state, argv=self.exec_argv,
                             environment=self.notifier.environment(), signals=self.signals)
        except OSError as exc:  # still the old code, with every node: say so and go on
            self.sink = self.fleet.sink = default_sink()
            self._attach_sink()
            if self.control is not None:
                self.control.cancel_export()
            self.emit("swarmd.reload_failed", f"the new nodes run, but the supervisor could "
                      f"not re-execute itself into the new swarmd code ({exc.strerror}); it "
                      f"goes on with swarmd {__version__}", priority=3)
            self._reloaded(True, outcome.message, waiters, kind=None)

    # ---- the hand-over state ---------------------------------------------------------------

    def _state(self, outcome: Outcome, waiters: list[Waiter]) -> dict[str, Any]:
        from swarmd.supervisor import handover

        answer = [w.fd for w in waiters if w is not None]
        pending = ([w.fd for w in self.pending_deploy if w is not None]
                   if self.pending_deploy is not None else None)
        control = self.control.export() if self.control is not None else None
        self.fleet.take_all_beats()
        return {
            "version": __version__, "config": to_data(self.config),
            "limits": self.limits.to_data(), "import_seconds": self.import_seconds,
            "restarts": self.fleet.restarts, "started_monotonic": self.started_monotonic,
            "ready_sent": self.ready_sent, "deploy": outcome.to_dict(),
            "answer": answer if control else [], "pending": pending if control else (
                [] if pending is not None else None),
            "control": control,
            "slots": [handover.slot_state(slot) for slot in self.fleet.slots.values()],
            "telemetry": self.telemetry.to_state(),
            "beats_fd": self.beats.fd if self.beats is not None else None,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        from swarmd.supervisor import handover
        from swarmd.supervisor.deploy import Outcome

        self.fleet.restarts = int(state["restarts"])
        self.started_monotonic = float(state["started_monotonic"])
        self.ready_sent = bool(state["ready_sent"])
        self.fleet.batching = self.ready_sent
        self.last_deploy = Outcome.from_dict(state["deploy"])
        self.fleet.restore([handover.slot_from_state(data, self.fleet.new_backoff())
                            for data in state["slots"]],
                           [handover.proc_from_state(data["proc"]) if data["proc"] else None
                            for data in state["slots"]])

    # ---- what the fleet tells -------------------------------------------------------------

    def private_fds(self) -> list[int]:
        """The supervisor's own fds: a child closes them all, so no node holds another's pipe,
        the notify socket or the control socket. Every node fd that is open is in the poller
        (unregistered right before it is closed), so this never walks the fleet: a walk per
        fork touches every node's objects, each page of them a copy-on-write fault after the
        last fork (O(N^2) faults for a fleet's start)."""
        fds = self.poller.fds()
        fds.append(self.poller.fileno())
        fds.extend(self.signals.fds())
        if self.control is not None:
            fds.extend(self.control.fds())
        notify_fd = self.notifier.fileno()
        if notify_fd is not None:
            fds.append(notify_fd)
        if self.deploy is not None:
            fds.extend(self.deploy.fds())
        fds.extend(self.telemetry.fds())
        sink_fds = getattr(self.sink, "fds", None)
        if sink_fds is not None:
            fds.extend(sink_fds())
        return fds

    def first_report(self, slot: Slot, proc: NodeProcess) -> None:
        if self.deploy is not None:
            self.deploy.first_report(slot, proc)
        self.check_ready()
        self.upkeep.first_report(slot)

    def recycle_due(self, slot: Slot, recycle: Recycle) -> None:
        self.upkeep.due(slot.id, recycle)

    def _busy(self) -> bool:
        """A deploy, a quiet or a stop runs the fleet: no recycle starts meanwhile."""
        return (self.stopping or self.deploy is not None or self.fleet.quiet
                or not self.ready_sent)

    def take_over_exit(self, slot: Slot, proc: NodeProcess) -> bool:
        return self.deploy is not None and self.deploy.take_over_exit(slot, proc)

    def gave_up(self, slot: Slot) -> None:
        self.begin_stop(f"node {slot.id} is in a crash loop", exit_code=1)

    # ---- readiness, watchdog, status -------------------------------------------------------

    def check_ready(self) -> None:
        """After each first report: READY=1 once every slot's node has reported."""
        if self.ready_sent:
            return
        self._first_reports += 1
        slots = self.fleet.slots
        if self._first_reports < len(slots):
            return  # fewer first reports than slots: no need to look at each (O(N^2) at start)
        if all(s.proc is not None and s.proc.first_report_at is not None
               for s in slots.values()):
            self._send_ready(f"every node reported its first health "
                             f"({self.clock() - self.started_monotonic:.2f}s after start)")

    def _boot_deadline(self) -> None:
        if not self.ready_sent and not self.stopping:
            waiting = [s.id for s in self.fleet.slots.values()
                       if s.proc is None or s.proc.first_report_at is None]
            self._send_ready(f"timeouts.boot passed; still waiting for node(s) {waiting}")

    def _send_ready(self, why: str) -> None:
        self.ready_sent = True
        text = self.status_text()
        self.notifier.ready(text)
        self.emit("swarmd.ready", f"ready: {why}; {text}")
        self._run_pending_deploy()  # a HUP that came during the start
        self.fleet.start_batching()
        self.upkeep.begin()

    def _watchdog(self, when: float) -> None:
        """WATCHDOG=1 from the loop itself, every WATCHDOG_USEC/2, also during stop."""
        self.notifier.watchdog()
        interval = self.notifier.watchdog_interval or 0
        now = self.clock()
        self.telemetry.watchdog(now - when)
        upcoming = when + interval
        if upcoming <= now:  # the loop fell behind: keep the rhythm from now on
            upcoming = now + interval
        self.timers.call_at(upcoming, lambda: self._watchdog(upcoming))

    def _extend_timeout(self) -> None:
        """EXTEND_TIMEOUT_USEC every EXTEND_EVERY while a stop or deploy progresses; systemd's
        own timeout applies again as soon as the loop stops sending it."""
        if self._extending is not None:
            return
        self._extend_tick()

    def _extend_tick(self) -> None:
        self._extending = None
        if (self.stopping and self.fleet.live()) or self.deploy is not None:
            self.notifier.extend_timeout(EXTEND_EVERY * 3)
            self._extending = self.timers.call_at(self.clock() + EXTEND_EVERY,
                                                  self._extend_tick)

    def status_text(self) -> str:
        """The STATUS= line; computed after every change, so without building the rows."""
        return summary_text(self.fleet.healthy_count(), len(self.fleet.slots),
                            self.fleet.restarts, self.mode())

    def mode(self) -> str:
        if self.stopping:
            return "stopping"
        if self.deploy is not None:
            return f"reloading ({self.deploy.progress})"
        if self.fleet.quiet:
            return "quiet"
        return "running" if self.ready_sent else "starting"

    def rows(self) -> list[NodeRow]:
        now, wall = self.clock(), time.time()
        rows = []
        for slot in sorted(self.fleet.slots.values(), key=lambda s: s.id):
            health = (self.fleet.config_of(slot.proc).health if slot.proc is not None
                      else self.config.health)
            row = slot.row(health, now, wall)
            if slot.proc is not None:
                figures = self.resources.figures(slot.id)
                source = figures.memory_source
                row = row._replace(cpu=figures.cpu, memory=figures.memory,
                                   memory_source=source.value if source else None)
            rows.append(row)
        return rows

    def emit(self, kind: str, message: str, *, priority: int | None = None,
             fields: dict[str, str | int] | None = None) -> None:
        self.fleet.emit(kind, message, priority=priority, fields=fields)

    # ---- last resort -----------------------------------------------------------------------

    def _emergency_stop(self) -> None:
        """The loop itself failed: TERM every node, KILL after the timeout, reap them all."""
        now = self.clock()
        procs = self.fleet.live()
        for proc in procs:
            proc.terminate(StopReason.SUPERVISOR_FAILED, now)
        deadline = now + self.config.timeouts.shutdown
        for proc in procs:
            while proc.alive and proc.reap() is None:
                if self.clock() >= deadline:
                    proc.kill()
                    try:
                        os.waitpid(proc.pid, 0)
                    except ChildProcessError:
                        pass
                    break
                time.sleep(0.05)  # the poller may be what failed: plain polling here

