"""The slots and their processes: start, deadlines, pipes, exits, restarts.

The fleet turns what a node does (reports, output, silence, exit) into entries and into the
restart policy. It knows nothing of the supervisor that owns it: what concerns the whole (a
first report for READY, an exit a deploy takes over, a slot that gave up) goes to its owner
through the narrow FleetOwner interface. One place changes a node's state: `_transition`.

A fleet runs versions: the supervisor's own (config and app, forked from its memory) and,
during a deploy, the candidate's, whose nodes it adopts; each process knows its version, and
its timeouts and health table come from that version's config.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, Protocol

from swarmd.config import Config
from swarmd.config.durations import format_duration
from swarmd.loop.poller import Poller
from swarmd.loop.timers import Timer, Timers
from swarmd.node.heartbeat import BeatTable
from swarmd.node.process import DRAIN_LIMIT, HEALTHY_ONE, ExitStatus, NodeProcess, State, StopReason
from swarmd.node.spawn import Forked, Recipe, adopt_forked, spawn, spawn_batch
from swarmd.supervisor import entries
from swarmd.supervisor.backoff import Backoff
from swarmd.supervisor.recycle import Recycle, RecycleReason, exit_is_recycle, lifetime_of
from swarmd.supervisor.resources import Resources
from swarmd.supervisor.slot import DownReason, Slot
from swarmd.supervisor.status import counts_as_healthy
from swarmd.supervisor.telemetry import Telemetry
from swarmd.systemd.events import Event, Sink
from swarmd.systemd.ratelimit import OutputLimiter, output_dropped_event

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
REAP_RETRY = 0.005  # a deploy's node not reparented yet: look again this much later


def restart_reason(proc: NodeProcess | None) -> str:
    """The `reason` label of swarmd_restarts_total: why the slot's node failed."""
    if proc is None:
        return "fork_failed"
    if proc.stop_reason is StopReason.HUNG:
        return "hung"
    if proc.stop_reason is StopReason.HEALTH:
        return "unhealthy"
    return "exited"


# A node's deadline is checked on a grid of 1/LIVENESS_GRID of its timeout: a fleet's healthy
# nodes share their checks' wake-ups (at most LIVENESS_GRID per timeout, whatever N).
LIVENESS_GRID = 8


def next_check(deadline: float, limit: float, now: float) -> float:
    """When to look at a node again: the last grid point (limit/LIVENESS_GRID apart) before
    its `deadline`, where one is still ahead; else the deadline itself, so that a node that
    went silent is judged exactly on time."""
    grid = limit / LIVENESS_GRID
    if grid <= 0:
        return deadline
    point = math.floor(deadline / grid) * grid
    return point if point > now else deadline


class FleetOwner(Protocol):
    """What the fleet tells the one who owns it, and the one thing it asks."""

    def private_fds(self) -> list[int]:
        """Every fd of the owner's that a new node must not hold."""

    def first_report(self, slot: Slot, proc: NodeProcess) -> None:
        """A node reported for the first time (proc.code is its code)."""

    def take_over_exit(self, slot: Slot, proc: NodeProcess) -> bool:
        """A node was reaped; True when the owner takes care of the slot (a deploy)."""

    def gave_up(self, slot: Slot) -> None:
        """A slot failed restart.give_up_after times in a row."""

    def recycle_due(self, slot: Slot, recycle: Recycle) -> None:
        """A node is due for a recycle (its lifetime is over); the owner rolls them."""


class Version(NamedTuple):
    """A config and, where this process can fork it, the recipe of its nodes."""

    config: Config
    recipe: Recipe | None  # None: its nodes come from a deploy's candidate


class Fleet:
    """Slots, their processes, and what happens to a process until it is reaped."""

    def __init__(self, config: Config, recipe: Recipe | None, *, sink: Sink, owner: FleetOwner,
                 poller: Poller, timers: Timers, clock: Callable[[], float],
                 resources: Resources | None = None, telemetry: Telemetry | None = None,
                 beats: BeatTable | None = None) -> None:
        self.versions: dict[int, Version] = {0: Version(config, recipe)}
        self.beats = beats  # where app nodes beat while healthy (read when it matters)
        self.resources = resources or Resources.none()
        self.telemetry = telemetry or Telemetry(config.metrics)
        self.current = 0
        self.sink = sink
        self.owner = owner
        self.poller = poller
        self.timers = timers
        self.clock = clock
        self.slots: dict[int, Slot] = {}
        self.quiet = False
        self.stopping = False
        self.restarts = 0
        self.dirty = True  # something STATUS= shows changed
        self.batching = False  # running nodes' pipes read in batches: from READY=1 on
        self._last_protocol_event: dict[int, float] = {}
        self.limiter = OutputLimiter(config.output)  # node output to the log, per slot
        self._drop_reports: dict[int, Timer] = {}  # slot -> the pending output_dropped entry
        # while a node's exit is handled: what would be written (events, its last words),
        # written once the replacement is forked, so that no write delays the fork
        self._held: list[Callable[[], None]] | None = None

    # ---- versions --------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.versions[self.current].config

    def config_of(self, proc: NodeProcess) -> Config:
        version = self.versions.get(proc.version)
        return (version or self.versions[self.current]).config

    def add_version(self, config: Config) -> int:
        number = max(self.versions) + 1
        self.versions[number] = Version(config, None)
        return number

    def forget_version(self, number: int) -> None:
        if number != self.current:
            self.versions.pop(number, None)

    # ---- slots -----------------------------------------------------------------------------

    def live(self) -> list[NodeProcess]:
        return [slot.proc for slot in self.slots.values() if slot.proc is not None]

    def mark_dirty(self) -> None:
        self.dirty = True

    def new_backoff(self) -> Backoff:
        return Backoff(self.config.restart)

    def add_slot(self, slot_id: int) -> Slot:
        slot = self.slots.get(slot_id)
        if slot is None:
            slot = Slot(slot_id, self.new_backoff())
            self.slots[slot_id] = slot
        return slot

    def drop_slot(self, slot: Slot) -> None:
        slot.cancel_restart()
        self.slots.pop(slot.id, None)
        self.telemetry.slot_removed(slot.id)
        self.limiter.forget(slot.id)
        self.resources.forget(slot.id)
        self.mark_dirty()

    def healthy_count(self) -> int:
        return sum(1 for slot in self.slots.values() if slot.proc is not None
                   and counts_as_healthy(slot.proc.code, slot.proc.state.value))

    # ---- starting --------------------------------------------------------------------------

    def start_all(self, forked: list[Forked]) -> None:
        """The first start: every slot of the config, with the node the first start's loader
        forked for it (`forked`), or forked here in a row (spawn_batch); then watched. Their
        node.started entries follow once the whole fleet is forked."""
        recipe = self.versions[self.current].recipe
        assert recipe is not None
        slots = [self.add_slot(slot_id) for slot_id in self.config.node_ids]
        for slot in slots:
            slot.generation += 1
        ready: dict[int, Forked | OSError] = {f.node_id: f for f in forked}
        missing = [slot for slot in slots if slot.id not in ready]
        if missing:
            results = spawn_batch([(slot.id, slot.generation) for slot in missing], recipe,
                                  self.owner.private_fds(), self.clock)
            ready.update(zip((slot.id for slot in missing), results, strict=True))
        self._held = []
        try:
            for slot in slots:
                result = ready[slot.id]
                if isinstance(result, OSError):
                    self.emit("node.exited", f"node {slot.id}: fork failed: {result.strerror}",
                              priority=3, fields={"SWARMD_NODE_ID": slot.id})
                    self._schedule_restart(slot, None)
                    continue
                proc = adopt_forked(result, recipe)
                proc.version = self.current
                self._attach(slot, proc, result.started_at)
        finally:
            self.write_held()

    def start(self, slot: Slot) -> None:
        """Fork the slot's next node from this process (the current version), and give it the
        CPU at once (see spawn): a restart, a deploy's rollback, a delayed restart."""
        recipe = self.versions[self.current].recipe
        assert recipe is not None, "the current version is always forked here"
        slot.cancel_restart()
        slot.down_reason = None
        slot.generation += 1
        now = self.clock()
        try:
            proc = spawn(slot.id, slot.generation, now, recipe,
                         close_fds=self.owner.private_fds())
        except OSError as exc:
            self.emit("node.exited", f"node {slot.id}: fork failed: {exc.strerror}",
                      priority=3, fields={"SWARMD_NODE_ID": slot.id})
            self._schedule_restart(slot, None)
            return
        proc.version = self.current
        self._attach(slot, proc, now)

    def next_generation(self, slot: Slot) -> int:
        """The generation a node forked elsewhere (a deploy's candidate) takes in `slot`."""
        slot.cancel_restart()
        slot.generation += 1
        return slot.generation

    def adopt(self, slot: Slot, proc: NodeProcess, version: int) -> None:
        """A node forked by a deploy's candidate, now the supervisor's child, in `slot`."""
        slot.down_reason = None
        proc.version = version
        self._attach(slot, proc, self.clock())

    def _attach(self, slot: Slot, proc: NodeProcess, now: float) -> None:
        slot.proc = proc
        self.poller.register(proc.pidfd, partial(self._on_exit, slot, proc))
        self.poller.register(proc.health_fd, partial(self._on_health, proc))
        for fd, priority in proc.output_fds.items():
            self.poller.register(fd, partial(self._on_output, proc, fd, priority))
        config = self.config_of(proc)
        self._arm_liveness(proc, now + config.timeouts.boot)
        self.resources.started(proc)
        if config.limits.lifetime is not None:
            lifetime = lifetime_of(slot.id, proc.generation, config.limits.lifetime)
            proc.track(self.timers.call_at(proc.started_at + lifetime,
                                           partial(self._lifetime_over, slot, proc, lifetime)))
        self._transition(proc, State.BOOTING, Event(
            "node.started", f"node {slot.id} started (pid {proc.pid}, generation "
                            f"{proc.generation})", proc.ref))

    def restore(self, slots: list[Slot], procs: list[NodeProcess | None]) -> None:
        """Take over the slots and processes a supervisor left when it re-executed itself into
        this code: every process runs the current version; its pending deadlines (report,
        drain, KILL after TERM, a restart) are armed again from the times it recorded."""
        for slot, proc in zip(slots, procs, strict=True):
            self.slots[slot.id] = slot
            if slot.restart_at is not None:
                self.restart_later(slot, slot.restart_at)
            if proc is None:
                continue
            proc.version = self.current
            slot.proc = proc
            self.poller.register(proc.pidfd, partial(self._on_exit, slot, proc))
            running = self.batching and proc.first_report_at is not None
            if proc.health_fd is not None:
                self.poller.register(proc.health_fd, partial(self._on_health, proc),
                                     batched=running)
            for fd, priority in proc.output_fds.items():
                self.poller.register(fd, partial(self._on_output, proc, fd, priority),
                                     batched=running)
            t = self.config.timeouts
            if proc.term_sent_at is not None:
                proc.track(self.timers.call_at(proc.term_sent_at + t.shutdown,
                                               partial(self._kill, proc)))
            elif proc.state is State.DRAINING and proc.drain_started_at is not None:
                proc.track(self.timers.call_at(proc.drain_started_at + t.drain,
                                               partial(self._drained, proc)))
            self._arm_liveness(proc, self.clock())  # works out the real deadline itself
        self.mark_dirty()

    def _transition(self, proc: NodeProcess, state: State, entry: Event | None = None) -> None:
        """The one place a node's state changes; its entry, if any, is written with it."""
        proc.state = state
        self.mark_dirty()
        if entry is not None:
            self._hold(self.sink.emit, entry)

    # ---- asking nodes to go ----------------------------------------------------------------

    def terminate(self, proc: NodeProcess, reason: StopReason, now: float,
                  detail: str | None = None) -> None:
        """TERM now, KILL after timeouts.shutdown."""
        if not proc.alive or proc.term_sent_at is not None:
            proc.ask_to_go(reason, detail)
            return
        proc.terminate(reason, now, detail)
        self._transition(proc, State.STOPPING)
        shutdown = self.config_of(proc).timeouts.shutdown
        proc.track(self.timers.call_at(now + shutdown, partial(self._kill, proc)))

    def drain(self, proc: NodeProcess, reason: StopReason) -> None:
        """TSTP now, TERM after timeouts.drain unless it exits first (a deploy, a removal)."""
        proc.ask_to_go(reason)
        if proc.term_sent_at is not None or not proc.alive:
            return  # already on its way out (hung, restart code, stop)
        now = self.clock()
        proc.drain_started_at = now
        self._transition(proc, State.DRAINING)
        proc.send(signal.SIGTSTP)
        drain = self.config_of(proc).timeouts.drain
        proc.track(self.timers.call_at(now + drain, partial(self._drained, proc)))

    def _lifetime_over(self, slot: Slot, proc: NodeProcess, lifetime: float) -> None:
        if slot.proc is proc and proc.alive and proc.stop_reason is None:
            limits = self.config_of(proc).limits
            assert limits.lifetime is not None
            self.owner.recycle_due(slot, Recycle(
                RecycleReason.LIFETIME, f"ran {format_duration(self.clock() - proc.started_at)}"
                f", lifetime {format_duration(lifetime)} (limits.lifetime "
                f"{format_duration(limits.lifetime)})"))

    def recycle(self, slot: Slot, recycle: Recycle) -> bool:
        """Replace the slot's node on purpose: TSTP, TERM after it exits or timeouts.drain, a
        new node at once (see _exited); never a failure. False when there is nothing to do."""
        proc = slot.proc
        if proc is None or not proc.alive or proc.stop_reason is not None:
            return False
        self.emit_entry(entries.node_recycled(proc, recycle))
        self.telemetry.recycled(slot.id, recycle.reason.value)
        self.drain(proc, StopReason.RECYCLE)
        return True

    def _drained(self, proc: NodeProcess) -> None:
        self.terminate(proc, proc.stop_reason or StopReason.DEPLOY, self.clock())

    def _kill(self, proc: NodeProcess) -> None:
        if proc.alive:
            shutdown = self.config_of(proc).timeouts.shutdown
            self.emit("node.killed", f"node {proc.id} did not exit within timeouts.shutdown "
                                     f"({format_duration(shutdown)}) after TERM: KILL", proc)
            proc.kill()

    def stop_all(self) -> None:
        """TERM to every node (KILL after timeouts.shutdown); nothing is restarted after."""
        self.stopping = True
        now = self.clock()
        for slot in self.slots.values():
            slot.cancel_restart()
            if slot.proc is not None:
                self.terminate(slot.proc, StopReason.STOP, now)

    def quiet_all(self) -> None:
        """TSTP to every node; nothing is restarted until a deploy or stop."""
        self.quiet = True
        for slot in self.slots.values():
            slot.cancel_restart()
            if slot.proc is not None:
                slot.proc.send(signal.SIGTSTP)
            elif slot.down_reason is None or slot.down_reason is DownReason.RESTARTING:
                slot.down_reason = DownReason.QUIET
        self.mark_dirty()

    # ---- deadlines -------------------------------------------------------------------------

    def _arm_liveness(self, proc: NodeProcess, when: float) -> None:
        """One deadline check per process: a new one replaces the pending one."""
        if proc.liveness is not None:
            proc.liveness.cancel()
        proc.liveness = self.timers.call_at(when, partial(self._check_liveness, proc))

    def take_beats(self, proc: NodeProcess) -> None:
        """What the node's heartbeat entry says since the last look."""
        if self.beats is not None:
            proc.take_beats(self.beats.read(proc.id, proc.pid))

    def take_all_beats(self) -> None:
        """Before the fleet is shown (status, a scrape) or handed over: every node's beats."""
        if self.beats is not None:
            for slot in self.slots.values():
                if slot.proc is not None:
                    self.take_beats(slot.proc)

    def _check_liveness(self, proc: NodeProcess) -> None:
        """Boot and report deadlines: a node silent too long is hung."""
        if not proc.alive or proc.term_sent_at is not None:
            return
        self.take_beats(proc)
        t = self.config_of(proc).timeouts
        if proc.last_report_at is None:
            deadline, limit, what = proc.started_at + t.boot, t.boot, "no first report"
        else:
            deadline, limit, what = proc.last_report_at + t.report, t.report, "no report"
        now = self.clock()
        if now >= deadline and proc.health_fd is not None:
            # A stalled loop is not a hung fleet: reports waiting in the pipe come first.
            self._on_health(proc)
            if not proc.alive or proc.term_sent_at is not None:
                return
            if proc.last_report_at is not None:
                deadline, limit, what = proc.last_report_at + t.report, t.report, "no report"
        if now < deadline:
            self._arm_liveness(proc, next_check(deadline, limit, now))
            return
        name = "boot" if proc.last_report_at is None else "report"
        self.emit("node.hung", f"node {proc.id} is hung ({what} within timeouts.{name} = "
                               f"{format_duration(limit)}): TERM", proc,
                  fields={"SWARMD_HEALTH": "hung"})
        self.terminate(proc, StopReason.HUNG, now,
                       f"hung: {what} within timeouts.{name} ({format_duration(limit)})")

    # ---- reports ---------------------------------------------------------------------------

    def _on_health(self, proc: NodeProcess) -> None:
        batch = proc.read_health()
        if batch is HEALTHY_ONE and proc.code == 0:  # code 0 implies a first report
            proc.last_report_at = self.clock()  # the usual wake-up at rest: nothing else changes
            proc.reports += 1
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
            self.timers.call_at(now + CLOSED_PIPE_GRACE, partial(self._closed_pipe, proc))
            return
        if batch.errors:
            self._protocol_error(proc, batch.errors, now)
        proc.reports += batch.reports
        if batch.metrics is not None:
            self.telemetry.app_metrics(proc.id, batch.metrics, partial(self.emit, proc=proc))
        if batch.reports >= FLOOD_REPORTS and proc.health_fd is not None:
            self.poller.pause(proc.health_fd)
            pause = min(FLOOD_PAUSE, self.config_of(proc).timeouts.report / 4)
            proc.track(self.timers.call_at(now + pause, partial(self._resume_health, proc)))
        if batch.worst is None:
            return
        self._reported(proc, batch.worst, now)

    def _reported(self, proc: NodeProcess, code: int, now: float) -> None:
        proc.last_report_at = now
        config = self.config_of(proc)
        first = proc.first_report_at is None
        if first:
            proc.first_report_at = now
            if self.batching:
                self._batch_pipes(proc)
            if proc.state is State.BOOTING:
                self._transition(proc, State.RUNNING)
            if config.timeouts.report < config.timeouts.boot:  # re-arm earlier
                self._arm_liveness(proc, now + config.timeouts.report)
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
            if slot is not None and slot.proc is proc:
                self.owner.first_report(slot, proc)
        if code and proc.term_sent_at is None:  # 0 (healthy) never restarts a node
            info = config.health[code]
            if info.restarts:
                self.terminate(proc, StopReason.HEALTH, now, f"reported {info.name} ({code})")

    def start_batching(self) -> None:
        """READY=1 went out: from now on a running node's pipes are read in batches (moved
        now, not one by one on the way to READY=1, where each first report counts)."""
        self.batching = True
        for proc in self.live():
            if proc.first_report_at is not None:
                self._batch_pipes(proc)

    def _batch_pipes(self, proc: NodeProcess) -> None:
        """A node that reported runs: its pipes are read in the poller's batches from now on
        (about 22 rounds a second at most for the whole fleet); until then each report counts (a
        first start's READY=1, a replacement's first report), so each wakes the loop."""
        if proc.health_fd is not None:
            self.poller.batch(proc.health_fd)
        for fd in proc.output_fds:
            self.poller.batch(fd)

    def _resume_health(self, proc: NodeProcess) -> None:
        if proc.health_fd is not None:
            self.poller.resume(proc.health_fd)

    def _closed_pipe(self, proc: NodeProcess) -> None:
        if proc.alive and proc.term_sent_at is None:
            self._protocol_error(proc, ["it closed the pipe, so it can no longer report and "
                                        "will be treated as hung"], self.clock(), force=True)

    def _health_event(self, proc: NodeProcess, previous: int | None, code: int, first: bool,
                      now: float) -> None:
        health = self.config_of(proc).health
        info = health[code]
        fields = {"SWARMD_HEALTH_CODE": code, "SWARMD_HEALTH": info.name}
        if first:
            text = f"node {proc.id} reported {info.name} ({code}) first, " \
                   f"{now - proc.started_at:.2f}s after start"
        else:
            old = health[previous] if previous is not None else None
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

    # ---- output ----------------------------------------------------------------------------

    def _on_output(self, proc: NodeProcess, fd: int, priority: int) -> None:
        lines, eof = proc.read_output(fd)
        if lines:
            self._forward_limited(proc, lines, priority)
        if eof and not self._exit_if_gone(proc):
            self.poller.unregister(fd)
            proc.close_output(fd)

    def _forward_limited(self, proc: NodeProcess, lines: list[str], priority: int) -> None:
        """As many lines as the node's output limit allows go to the log; the rest are
        counted, and told in a node.output_dropped entry (at most one per node per ten
        seconds), so that a flooding node never drowns the supervisor's own entries."""
        now = self.clock()
        allowed = self.limiter.take(proc.id, len(lines), now)
        for line in lines if allowed == len(lines) else lines[:allowed]:
            self._forward(proc, line, priority)
        if allowed < len(lines) and proc.id not in self._drop_reports:
            when = max(now, self.limiter.report_at(proc.id))
            self._drop_reports[proc.id] = self.timers.call_at(
                when, partial(self._report_drops, proc))

    def _report_drops(self, proc: NodeProcess, force: bool = False) -> None:
        timer = self._drop_reports.pop(proc.id, None)
        if timer is not None:
            timer.cancel()
        count, span = self.limiter.report(proc.id, self.clock(), force=force)
        if count:
            self._hold(self.sink.emit, output_dropped_event(proc.ref, count, span,
                                                            self.config_of(proc).output))

    def _forward(self, proc: NodeProcess, line: str, priority: int) -> None:
        if len(line) >= 3 and line[0] == "<" and line[2] == ">" and line[1] in "01234567":
            priority, line = int(line[1]), line[3:]  # sd-daemon style "<3>message"
        self._hold(self.sink.node_output, proc.ref, line, priority)

    # ---- exits -----------------------------------------------------------------------------

    def _exit_if_gone(self, proc: NodeProcess) -> bool:
        """A pipe of the node hit EOF: if that is because the process ended, handle its exit
        now rather than its pipes one by one first. (The kernel closes a dying process's
        files just before it makes it a zombie, so the pipes' hang-up usually wakes the loop
        first; by the time the loop runs, waitpid mostly finds the zombie already.)"""
        slot = self.slots.get(proc.id)
        if slot is None or slot.proc is not proc or proc.reap(self.resources.before_reap) is None:
            return False
        self._on_exit(slot, proc)
        return True

    def _on_exit(self, slot: Slot, proc: NodeProcess) -> None:
        status = proc.reap(self.resources.before_reap)
        if status is None:
            if proc.pidfd is not None:
                # its pidfd says it ended, but it is not our child yet: a deploy's node that
                # died before its intermediate exited; it is reparented to us in a moment
                self.poller.pause(proc.pidfd)
                self.timers.call_at(self.clock() + REAP_RETRY, partial(self._reap_again, proc))
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

    def _reap_again(self, proc: NodeProcess) -> None:
        if proc.pidfd is not None:
            self.poller.resume(proc.pidfd)

    def write_held(self) -> None:
        """Write what was held back while nodes were forked, in order; stop holding."""
        held, self._held = self._held, None
        for write in held or ():
            write()

    def _exited(self, slot: Slot, proc: NodeProcess, status: ExitStatus) -> None:
        """The restart policy for a process that was reaped. Only the decision comes before
        a replacement's fork; the entries are made after it (_later)."""
        self._last_protocol_event.pop(proc.pid, None)
        self._transition(proc, State.EXITED)  # its entry is made after the fork (_later)
        recycle = (None if proc.stop_reason is not None else
                   exit_is_recycle(status.code, self.clock() - proc.started_at,
                                   self.config_of(proc).restart.reset_after, False))
        self._later(entries.node_exited, proc, status, self.quiet,
                    self.resources.oom_killed(proc), recycle)
        self.mark_dirty()
        if self.stopping:
            return
        if self.owner.take_over_exit(slot, proc):
            return
        if slot.id not in self.slots:
            return
        if self.quiet:
            slot.down_reason = DownReason.QUIET
            return
        if proc.stop_reason is StopReason.REMOVED:
            self.drop_slot(slot)
            return
        if recycle is not None or proc.stop_reason is StopReason.RECYCLE:
            if recycle is not None:  # done with its work: a new node, not a failure
                self._later(entries.node_recycled, proc, recycle)
                self.telemetry.recycled(slot.id, recycle.reason.value)
            self.start(slot)
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
            last = proc.read_health()  # the metrics it flushed as it exited count too
            if last is not None and last.metrics is not None:
                self.telemetry.app_metrics(proc.id, last.metrics, partial(self.emit, proc=proc))
            proc.close_health()
        if self.beats is not None:
            self.take_beats(proc)
            self.beats.clear(proc.id, proc.pid)
        self.telemetry.ended(proc.id, proc.reports, proc.exit.short() if proc.exit else "?",
                             proc.cpu_seconds)
        for fd, priority in list(proc.output_fds.items()):
            lines, _ = proc.read_output(fd, limit=DRAIN_LIMIT)
            lines += proc.flush_output(fd)
            if lines:
                self._forward_limited(proc, lines, priority)
            self.poller.unregister(fd)
            proc.close_output(fd)
        if proc.id in self._drop_reports or self.limiter.dropped(proc.id):
            self._report_drops(proc, force=True)  # its story ends here, before node.exited
        if proc.pidfd is not None:
            self.poller.unregister(proc.pidfd)
            proc.close_pidfd()
        # what it left (in its cgroup, or double-forked away), after the replacement's fork
        # and before its first report: nothing outlives its node
        self.resources.clean_up(proc, {p.pid for p in self.live()})

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
            self.owner.gave_up(slot)
            return
        self.restarts += 1
        slot.restarts += 1
        self.telemetry.restarted(slot.id, restart_reason(proc))
        self._later(entries.node_restarting, slot.id, proc, delay, slot.backoff.failures)
        if delay <= 0:
            self.start(slot)
        else:
            self.restart_later(slot, now + delay)
        self.mark_dirty()

    def restart_later(self, slot: Slot, when: float) -> None:
        slot.down_reason = DownReason.RESTARTING
        slot.restart_at = when
        slot.restart_timer = self.timers.call_at(when, partial(self.start, slot))

    # ---- entries ---------------------------------------------------------------------------

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

    def emit_entry(self, entry: Event) -> None:
        self._hold(self.sink.emit, entry)

    def emit(self, kind: str, message: str, proc: NodeProcess | None = None, *,
             priority: int | None = None, fields: dict[str, str | int] | None = None) -> None:
        self._later(Event, kind, message, proc.ref if proc else None, priority,
                    dict(fields or {}))
