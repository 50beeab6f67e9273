"""The slots and their processes: start, deadlines, pipes, exits, restarts.

The node-facing half of the supervisor: it turns what a node does (reports, output, silence,
exit) into events and into the restart policy. The decisions that concern the whole fleet
(stop, quiet, reload, readiness) live in supervisor.py, which builds on this class.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from swarmd.config import Config
from swarmd.config.durations import format_duration
from swarmd.loop.poller import Poller
from swarmd.loop.timers import Timers
from swarmd.node.process import DRAIN_LIMIT, HEALTHY_ONE, ExitStatus, NodeProcess, State, spawn
from swarmd.supervisor import entries
from swarmd.supervisor.backoff import Backoff
from swarmd.supervisor.slot import Slot
from swarmd.systemd.events import Event, JournalSink, Sink, default_sink

if TYPE_CHECKING:
    from swarmd.supervisor.reload import RollingReload

CLOSED_PIPE_GRACE = 0.5  # seconds between EOF on a health pipe and calling it an error
# A read that finds this many reports comes from a node reporting in a tight loop (one that
# reports on schedule is read once per report): its pipe is left unread for FLOOD_PAUSE (at most
# a quarter of timeouts.report), so that one wake-up reads what piled up instead of thousands
# reading a few bytes each. The node's own writes then wait (Node keeps its worst pending code),
# and the supervisor stays under its fair share of the CPU, which is what lets the scheduler run
# it the moment a deadline (the watchdog) comes due. (32 was too many: with 64 flooders on two
# cores a read rarely found that many.)
FLOOD_REPORTS = 8
FLOOD_PAUSE = 0.1
PROTOCOL_ERROR_EVERY = 1.0  # at most one protocol-error entry per node per second


class Fleet:
    """Slots, their processes, and what happens to a process until it is reaped."""

    reload: RollingReload | None

    def __init__(self, config: Config, sink: Sink | None = None) -> None:
        self.config = config
        self.sink = sink or default_sink()
        self.journal = isinstance(self.sink, JournalSink)
        self.clock = time.monotonic
        self.timers = Timers()
        self.poller = Poller()
        self.slots: dict[int, Slot] = {}
        self.app: Callable[..., Any] | str | None = None
        self.quiet = False
        self.stopping = False
        self.restarts = 0
        self.reload = None
        self._dirty = True
        self._last_protocol_event: dict[int, float] = {}
        # while a node's exit is handled: what would be written (events, its last words),
        # written once the replacement is forked, so that no write delays the fork
        self._held: list[Callable[[], None]] | None = None

    # Supplied by the supervisor: what the fleet asks of the whole.
    def private_fds(self) -> list[int]:
        raise NotImplementedError

    def begin_stop(self, reason: str, exit_code: int | None = None) -> None:
        raise NotImplementedError

    def check_ready(self) -> None:
        raise NotImplementedError

    def live(self) -> list[NodeProcess]:
        return [slot.proc for slot in self.slots.values() if slot.proc is not None]

    def mark_dirty(self) -> None:
        self._dirty = True

    def add_slot(self, slot_id: int) -> Slot:
        slot = Slot(slot_id, Backoff(self.config.restart))
        self.slots[slot_id] = slot
        return slot

    def drop_slot(self, slot: Slot) -> None:
        slot.cancel_restart()
        self.slots.pop(slot.id, None)
        self.mark_dirty()

    def start(self, slot: Slot, *, batch: bool = False) -> None:
        """Fork the slot's next node; batch: one of many forked in a row (see spawn)."""
        slot.cancel_restart()
        slot.down_reason = None
        slot.generation += 1
        now = self.clock()
        try:
            proc = spawn(slot.id, slot.generation, now, app=self.app,
                         command=self.config.command, env=dict(self.config.env),
                         journal=self.journal, close_fds=self.private_fds(),
                         step_aside=not batch)
        except OSError as exc:
            self.emit("node.exited", f"node {slot.id}: fork failed: {exc.strerror}",
                      priority=3, fields={"SWARMD_NODE_ID": slot.id})
            self._schedule_restart(slot, None)
            return
        slot.proc = proc
        self.poller.register(proc.pidfd, partial(self._on_exit, slot, proc))
        self.poller.register(proc.health_fd, partial(self._on_health, proc))
        for fd, priority in proc.output_fds.items():
            self.poller.register(fd, partial(self._on_output, proc, fd, priority))
        self._arm_liveness(proc, now + self.config.timeouts.boot)
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
        proc.track(self.timers.call_at(now + self.config.timeouts.shutdown,
                                       lambda: self._kill(proc)))

    def drain(self, proc: NodeProcess) -> None:
        """TSTP now, TERM after timeouts.drain unless it exits first (rolling reload)."""
        proc.state = State.DRAINING
        proc.send(signal.SIGTSTP)
        proc.track(self.timers.call_at(
            self.clock() + self.config.timeouts.drain,
            lambda: self.terminate(proc, proc.stop_reason or "reload", self.clock())))

    def _kill(self, proc: NodeProcess) -> None:
        if proc.alive:
            self.emit("node.killed", f"node {proc.id} did not exit within timeouts.shutdown "
                                     f"({format_duration(self.config.timeouts.shutdown)}) "
                                     f"after TERM: KILL", proc)
            proc.kill()

    def _arm_liveness(self, proc: NodeProcess, when: float) -> None:
        """One deadline check per process: a new one replaces the pending one."""
        if proc.liveness is not None:
            proc.liveness.cancel()
        proc.liveness = self.timers.call_at(when, partial(self._check_liveness, proc))

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
            self._arm_liveness(proc, deadline)
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
        if batch is HEALTHY_ONE and proc.code == 0:  # code 0 implies a first report
            proc.last_report_at = self.clock()  # the usual wake-up at rest: nothing else changes
            return
        now = self.clock()
        if batch is None:
            if self._exit_if_gone(proc):
                return
            if proc.health_fd is not None:
                self.poller.unregister(proc.health_fd)
                proc.close_health()
            # An exiting process closes its fds a moment before it becomes a zombie: judge
            # a closed pipe only once the exit would have been seen.
            self.timers.call_at(now + CLOSED_PIPE_GRACE, lambda: self._closed_pipe(proc))
            return
        if batch.errors:
            self._protocol_error(proc, batch.errors, now)
        if batch.reports >= FLOOD_REPORTS and proc.health_fd is not None:
            self.poller.pause(proc.health_fd)
            pause = min(FLOOD_PAUSE, self.config.timeouts.report / 4)
            proc.track(self.timers.call_at(now + pause, partial(self._resume_health, proc)))
        if batch.worst is None:
            return
        code = batch.worst
        proc.last_report_at = now
        first = proc.first_report_at is None
        if first:
            proc.first_report_at = now
            if proc.state is State.BOOTING:
                proc.state = State.RUNNING
            if self.config.timeouts.report < self.config.timeouts.boot:  # re-arm earlier
                self._arm_liveness(proc, now + self.config.timeouts.report)
        if code == 0:
            if proc.healthy_since is None:
                proc.healthy_since = now
        else:
            proc.healthy_since = None
        previous, proc.code = proc.code, code
        if code != previous:
            self._health_event(proc, previous, code, first, now)
        if first:
            slot = self.slots.get(proc.id)
            if self.reload is not None and slot is not None:
                self.reload.node_reported_first(slot, code)
            self.check_ready()
        if code and proc.term_sent_at is None:  # 0 (healthy) never restarts a node
            info = self.config.health[code]
            if info.restarts:
                self.terminate(proc, f"reported {info.name} ({code})", now)

    def _resume_health(self, proc: NodeProcess) -> None:
        if proc.health_fd is not None:
            self.poller.resume(proc.health_fd)

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
        if eof and not self._exit_if_gone(proc):
            self.poller.unregister(fd)
            proc.close_output(fd)

    def _forward(self, proc: NodeProcess, line: str, priority: int) -> None:
        if len(line) >= 3 and line[0] == "<" and line[2] == ">" and line[1] in "01234567":
            priority, line = int(line[1]), line[3:]  # sd-daemon style "<3>message"
        self._hold(self.sink.node_output, proc.ref, line, priority)

    def _exit_if_gone(self, proc: NodeProcess) -> bool:
        """A pipe of the node hit EOF: if that is because the process ended, handle its exit
        now rather than its pipes one by one first. (The kernel closes a dying process's
        files just before it makes it a zombie, so the pipes' hang-up usually wakes the loop
        first; by the time the loop runs, waitpid mostly finds the zombie already.)"""
        slot = self.slots.get(proc.id)
        if slot is None or slot.proc is not proc or proc.reap() is None:
            return False
        self._on_exit(slot, proc)
        return True

    def _on_exit(self, slot: Slot, proc: NodeProcess) -> None:
        status = proc.reap()
        if status is None:
            return
        # The replacement is forked first: the dead node's pipes are read and closed after
        # (still in the poller meanwhile, so a child forked now closes them: private_fds),
        # and what is to be written (its last words, then the events) is written after that.
        self._held = []
        try:
            if slot.proc is proc:
                slot.proc = None
            self._exited(slot, proc, status)
        finally:
            events, self._held = self._held, []
            self._forget(proc)
            self._held += events
            self.write_held()

    def write_held(self) -> None:
        """Write what was held back while nodes were forked, in order; stop holding."""
        held, self._held = self._held, None
        for write in held or ():
            write()

    def _exited(self, slot: Slot, proc: NodeProcess, status: ExitStatus) -> None:
        """The restart policy for a process that was reaped. Only the decision comes before
        a replacement's fork; the entries are made after it (_later)."""
        self._last_protocol_event.pop(proc.pid, None)
        self._later(entries.node_exited, proc, status, self.quiet)
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
        if proc.liveness is not None:
            proc.liveness.cancel()
            proc.liveness = None
        if proc.health_fd is not None:
            self.poller.unregister(proc.health_fd)
            proc.close_health()
        for fd, priority in list(proc.output_fds.items()):
            lines, _ = proc.read_output(fd, limit=DRAIN_LIMIT)
            for line in lines + proc.flush_output(fd):
                self._forward(proc, line, priority)
            self.poller.unregister(fd)
            proc.close_output(fd)
        if proc.pidfd is not None:
            self.poller.unregister(proc.pidfd)
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
        self._later(entries.node_restarting, slot.id, proc, delay, slot.backoff.failures)
        if delay <= 0:
            self.start(slot)
        else:
            slot.down_reason = "restarting"
            slot.restart_timer = self.timers.call_at(now + delay, lambda: self.start(slot))
        self.mark_dirty()

    def _hold(self, write: Callable[..., None], *args: Any) -> None:
        """Write now or, while a replacement is being forked, once it is (write_held)."""
        if self._held is not None:
            self._held.append(partial(write, *args))
        else:
            write(*args)

    def _later(self, entry: Callable[..., Event], *facts: Any) -> None:
        """Make an entry from the facts and write it: now, or both once a replacement is
        forked, so that not even the entry's text is worked out before the fork."""
        self._hold(lambda: self.sink.emit(entry(*facts)))

    def emit(self, kind: str, message: str, proc: NodeProcess | None = None, *,
             priority: int | None = None, fields: dict[str, str | int] | None = None) -> None:
        self._later(Event, kind, message, proc.ref if proc else None, priority,
                    dict(fields or {}))
