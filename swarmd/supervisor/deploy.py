"""A deploy: from RELOADING=1 to the new version in every slot, or the old one back in all.

1. Load: a candidate process (the swarmd code on disk) reads the new config and imports the new
   app, bounded by timeouts.boot; any failure rejects the deploy with every node untouched.
2. Roll: slot by slot, the node is quieted (TSTP), stopped when it exits or after
   timeouts.drain, and the candidate forks the new node; the next slot starts only after that
   node's first report, so capacity never drops by more than one node. Slots gone from the
   config are drained last.
3. Any trouble of a new node before the end (it exits, hangs, reports a restart code, cannot
   be forked) rolls back: slot by slot again, every node of the new version is replaced by one
   the supervisor forks from its own memory (the old config and, with preload, the old code).
4. Success hands over to the owner, which re-executes the supervisor into the new code.

The deploy knows the fleet through its methods and its owner through DeployOwner; it never
holds the supervisor.
"""

from __future__ import annotations

import enum
import os
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, Protocol

from swarmd.candidate.wire import ChannelClosed, Kind
from swarmd.config import Config
from swarmd.config.durations import format_duration
from swarmd.node.process import NodeProcess, StopReason
from swarmd.node.spawn import NodeLimits
from swarmd.supervisor.candidate import Candidate, Reply
from swarmd.supervisor.fleet import Fleet
from swarmd.supervisor.slot import DownReason, Slot


class Result(enum.Enum):
    IN_PROGRESS = "in progress"
    DEPLOYED = "deployed"
    REJECTED = "rejected"  # the new version could not be loaded: no node was touched
    ROLLED_BACK = "rolled back"
    ABORTED = "aborted"  # quieted or stopped while it ran


class Phase(enum.Enum):
    LOADING = "loading"
    ROLLING = "rolling"
    REMOVING = "removing"
    ROLLING_BACK = "rolling back"
    DONE = "done"


class Step(enum.Enum):
    """Where the slot in hand is."""

    DRAINING = "draining"  # its node was quieted; the next one comes when it is gone
    SPAWNING = "spawning"  # the candidate was asked for the new node
    BOOTING = "booting"  # the new node runs; the next slot comes after its first report
    NONE = "none"


class Outcome(NamedTuple):
    """What a deploy did, for `swarmd reload`, the journal and `status --json`."""

    result: Result
    message: str
    reason: str | None = None
    version: str | None = None  # the new swarmd version, once the candidate told it
    started: float | None = None  # wall-clock times
    finished: float | None = None
    replaced: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result.value, "reason": self.reason, "version": self.version,
                "started": self.started, "finished": self.finished,
                "replaced": self.replaced, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(Result(data["result"]), data.get("message", ""), data.get("reason"),
                   data.get("version"), data.get("started"), data.get("finished"),
                   int(data.get("replaced", 0)))


class DeployOwner(Protocol):
    def deploy_changed(self) -> None:
        """Progress worth a STATUS= line, or fds that came or went."""

    def deploy_finished(self, outcome: Outcome) -> None:
        """The deploy ended (any result)."""

    def collect(self, candidate: Candidate) -> None:
        """A candidate the deploy is done with (killed): reap it when it ended."""


class Deploy:
    """One deploy of the config at `config_path` into `fleet`."""

    def __init__(self, fleet: Fleet, owner: DeployOwner, *, config_path: str, entry: list[str],
                 journal: bool, limits: NodeLimits, cgroups: str | None = None) -> None:
        self.fleet = fleet
        self.owner = owner
        self.config_path = config_path
        self.entry = entry
        self.journal = journal
        self.limits = limits
        self.cgroups = cgroups
        self.phase = Phase.LOADING
        self.step_in_hand = Step.NONE
        self.started = time.time()
        self.candidate: Candidate | None = None
        self.new_config: Config | None = None
        self.new_version = -1
        self.version_name: str | None = None
        self.old_ids = sorted(fleet.slots)  # the config's, or what `swarmd scale` made
        self.plan: deque[int] = deque()
        self.total = 0
        self.replaced = 0
        self.restored = 0
        self.removed: set[int] = set()
        self.current: Slot | None = None
        self.failure: str | None = None
        self.outcome: Outcome | None = None
        self._deadline = None  # the pending time limit (loading, or a spawn)

    # ---- what the owner shows --------------------------------------------------------------

    @property
    def progress(self) -> str:
        if self.phase is Phase.LOADING:
            return "loading the new version"
        if self.phase is Phase.REMOVING:
            return f"stopping {len(self.removed)} removed slot(s)"
        slot = f"slot {self.current.id}, " if self.current is not None else ""
        if self.phase is Phase.ROLLING_BACK:
            return f"rolling back: {slot}{self.restored} restored"
        return f"{slot}{self.replaced}/{self.total} replaced"

    def fds(self) -> list[int]:
        return self.candidate.fds() if self.candidate is not None else []

    def in_progress(self) -> Outcome:
        return Outcome(Result.IN_PROGRESS, self.progress, self.failure, self.version_name,
                       self.started, None, self.replaced)

    # ---- loading ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the candidate; its messages come through the fleet's poller."""
        now = self.fleet.clock()
        try:
            candidate = Candidate.start(self.entry, self.config_path, journal=self.journal,
                                        limits=self.limits, now=now, cgroups=self.cgroups,
                                        beats=self.fleet.beats)
        except OSError as exc:
            self._finish(Result.REJECTED, [f"swarmd: cannot start the candidate process: "
                                           f"{exc.strerror or exc}"])
            return
        self.candidate = candidate
        self.fleet.poller.register(candidate.channel, self._on_message)
        self.fleet.poller.register(candidate.pidfd, self._on_candidate_end)
        # the config is read within the running version's timeouts.boot, the app within
        # the new one's (known once the config arrives)
        self._arm(now + self.fleet.config.timeouts.boot, self._loading_too_long)
        self.owner.deploy_changed()

    def _arm(self, when: float, callback: Callable[[], None]) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.fleet.timers.call_at(when, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _loading_too_long(self) -> None:
        self._deadline = None
        if self.phase is not Phase.LOADING or self.candidate is None:
            return
        if self.new_config is None:
            what = f"reading {self.config_path}"
            limit = self.fleet.config.timeouts.boot
        else:
            what = f"importing the app {self.new_config.app!r}"
            limit = self.new_config.timeouts.boot
        self._finish(Result.REJECTED, [f"swarmd: {what} did not finish within timeouts.boot "
                                       f"({format_duration(limit)}); the candidate process was "
                                       f"killed"])

    def _on_message(self) -> None:
        candidate = self.candidate
        if candidate is None:
            return
        now = self.fleet.clock()
        try:
            replies = candidate.read(now)
        except ChannelClosed as exc:
            self._candidate_lost(f"the candidate process closed its channel ({exc})")
            return
        for reply in replies:
            if self.phase is Phase.DONE:
                return
            self._handle(reply, now)

    def _handle(self, reply: Reply, now: float) -> None:
        if reply.kind is Kind.CONFIG and reply.config is not None:
            self.new_config = reply.config
            self.version_name = reply.version
            self._arm(now + reply.config.timeouts.boot, self._loading_too_long)
        elif reply.kind is Kind.LOADED and self.phase is Phase.LOADING:
            self._disarm()
            self._begin_roll()
        elif reply.kind is Kind.FAILED:
            self._finish(Result.REJECTED, reply.problems or ["the candidate gave no reason"],
                         config_stage=self.new_config is None)
        elif reply.kind is Kind.SPAWNED and reply.proc is not None:
            self._spawned(reply.proc)
        elif reply.kind is Kind.SPAWN_FAILED and reply.slot is not None:
            self._spawn_failed(reply.slot, reply.reason or "no reason given")

    def _on_candidate_end(self) -> None:
        candidate = self.candidate
        if candidate is None or candidate.reap() is None:
            return
        self._candidate_lost(candidate.describe_end())

    def _candidate_lost(self, why: str) -> None:
        if self.phase is Phase.LOADING:
            self._finish(Result.REJECTED, [f"swarmd: {why}"])
            return
        if self.phase is Phase.ROLLING:  # the next slot needs it
            slot = f"slot {self.current.id}: " if self.current is not None else ""
            self.fail(f"{slot}{why}")
        self._end_candidate()
        if (self.phase is Phase.ROLLING_BACK and self.step_in_hand is Step.SPAWNING
                and self.current is not None):
            self._disarm()
            self._start_old(self.current)

    def _end_candidate(self) -> None:
        """Kill the candidate and stop listening to it; a dead one is reaped at once, a
        living one by the owner when its pidfd says it ended (never a wait here)."""
        candidate, self.candidate = self.candidate, None
        if candidate is None:
            return
        self.fleet.poller.unregister(candidate.channel)
        self.fleet.poller.unregister(candidate.pidfd)
        candidate.kill()
        candidate.close()
        self.owner.collect(candidate)
        self.owner.deploy_changed()

    # ---- rolling forward -------------------------------------------------------------------

    def _begin_roll(self) -> None:
        assert self.new_config is not None
        fleet = self.fleet
        self.new_version = fleet.add_version(self.new_config)
        fleet.quiet = False
        wanted = list(self.new_config.node_ids)
        self.removed = {slot_id for slot_id in fleet.slots if slot_id not in wanted}
        for slot_id in wanted:
            slot = fleet.add_slot(slot_id)
            slot.backoff.policy = self.new_config.restart
            if slot.proc is None:
                slot.cancel_restart()
                slot.down_reason = DownReason.DEPLOYING
        self.plan = deque(wanted)
        self.total = len(wanted)
        self.phase = Phase.ROLLING
        self._step()

    def _step(self) -> None:
        """Move on to the next slot, or to the removals, or finish."""
        self.step_in_hand = Step.NONE
        while self.plan:
            slot = self.fleet.slots[self.plan.popleft()]
            self.current = slot
            proc = slot.proc
            if proc is not None and proc.alive:
                self.step_in_hand = Step.DRAINING
                self.fleet.drain(proc, StopReason.DEPLOY)
            else:
                self._spawn(slot)
            self.owner.deploy_changed()
            return
        self.current = None
        self.phase = Phase.REMOVING
        self._remove_slots()
        self._finish_if_removed()

    def _remove_slots(self) -> None:
        """Slots no longer in the config: an empty one goes now, a running one is drained
        (it goes when its node exits)."""
        for slot_id in sorted(self.removed):
            slot = self.fleet.slots[slot_id]
            if slot.proc is None:
                self.fleet.drop_slot(slot)
                self.removed.discard(slot_id)
            else:
                self.fleet.drain(slot.proc, StopReason.REMOVED)

    def _spawn(self, slot: Slot) -> None:
        assert self.candidate is not None and self.new_config is not None
        slot.down_reason = DownReason.DEPLOYING
        generation = self.fleet.next_generation(slot)
        self.step_in_hand = Step.SPAWNING
        try:
            self.candidate.request_spawn(slot.id, generation)
        except ChannelClosed as exc:
            self.fail(f"slot {slot.id}: cannot ask the candidate for the new node ({exc})")
            return
        self._arm(self.fleet.clock() + self.new_config.timeouts.boot,
                  partial(self._spawn_too_long, slot))

    def _spawn_too_long(self, slot: Slot) -> None:
        self._deadline = None
        if self.step_in_hand is Step.SPAWNING and self.current is slot:
            self.fail(f"slot {slot.id}: the candidate did not fork the new node within "
                      f"timeouts.boot")

    def _spawned(self, proc: NodeProcess) -> None:
        slot = self.fleet.slots.get(proc.id)
        if slot is None or slot.proc is not None:  # not asked for (cannot happen): not kept
            proc.kill()
            proc.close_pidfd()
            for fd in [*proc.output_fds, proc.health_fd]:
                if fd is not None:
                    os.close(fd)
            return
        self._disarm()
        self.fleet.adopt(slot, proc, self.new_version)
        if slot is self.current and self.step_in_hand is Step.SPAWNING:
            if self.phase is Phase.ROLLING_BACK:  # the failure came while it was forked
                self.step_in_hand = Step.DRAINING
                self.fleet.drain(proc, StopReason.ROLLBACK)
            else:
                self.step_in_hand = Step.BOOTING
        self._end_candidate_if_unneeded()

    def _spawn_failed(self, slot_id: int, reason: str) -> None:
        self._disarm()
        slot = self.fleet.slots.get(slot_id)
        if self.phase is Phase.ROLLING_BACK:
            if slot is not None and slot is self.current:
                self._start_old(slot)
            self._end_candidate_if_unneeded()
            return
        self.fail(f"slot {slot_id}: the new node could not be forked: {reason}")

    def first_report(self, slot: Slot, proc: NodeProcess) -> None:
        """A node's first report: the next slot may go."""
        if slot is not self.current or self.step_in_hand is not Step.BOOTING:
            return
        if self.phase is Phase.ROLLING and proc.version == self.new_version:
            assert self.new_config is not None and proc.code is not None
            info = self.new_config.health[proc.code]
            if info.restarts:
                self.fail(f"slot {slot.id}: the new node reported {info.name} ({proc.code}) "
                          f"first")
                return
            self.replaced += 1
            self._step()
        elif self.phase is Phase.ROLLING_BACK and proc.version == self.fleet.current:
            self.restored += 1
            self._step_back()

    def take_over_exit(self, slot: Slot, proc: NodeProcess) -> bool:
        """A node of the fleet was reaped: True when the deploy takes care of its slot."""
        if self.phase is Phase.DONE:
            return False
        if slot.id in self.removed and proc.stop_reason is StopReason.REMOVED:
            self.fleet.drop_slot(slot)
            self.removed.discard(slot.id)
            if self.phase is Phase.ROLLING_BACK:
                self._finish_rollback_if_done()
            else:
                self._finish_if_removed()
            return True
        if self.phase is Phase.ROLLING_BACK:
            return self._exit_while_rolling_back(slot, proc)
        if self.phase not in (Phase.ROLLING, Phase.REMOVING):
            return False
        if proc.version == self.new_version:
            why = proc.exit.describe() if proc.exit else "exited"
            if proc.stop_text:
                why += f" ({proc.stop_text})"
            when = "before its first report" if proc.first_report_at is None else "after it"
            self.fail(f"slot {slot.id}: the new node {why} {when}", dead=slot)
            return True
        if slot is self.current and self.step_in_hand is Step.DRAINING:
            self._spawn(slot)
            return True
        return False  # an old node elsewhere: the usual restart policy (the old version)

    def _finish_if_removed(self) -> None:
        if self.phase is Phase.REMOVING and not self.removed:
            self._disarm()
            self._finish(Result.DEPLOYED, [])

    # ---- rolling back ----------------------------------------------------------------------

    def fail(self, reason: str, dead: Slot | None = None) -> None:
        """A new node failed: every slot goes back to the old version, one at a time."""
        if self.phase is Phase.LOADING:
            self._finish(Result.REJECTED, [reason])
            return
        if self.phase in (Phase.ROLLING_BACK, Phase.DONE):
            return
        self.failure = reason
        self.phase = Phase.ROLLING_BACK
        self._disarm()
        fleet = self.fleet
        in_hand = self.current if self.step_in_hand is Step.SPAWNING else None
        # the dead slot first (nothing runs there), the one in hand next, then the others
        order = [s for s in (dead, in_hand, self.current) if s is not None]
        order += [fleet.slots[i] for i in sorted(fleet.slots)]
        plan: list[int] = []
        for slot in order:
            if slot.id in self.old_ids and slot.id not in plan and self._needs_old(slot):
                plan.append(slot.id)
        for slot_id in self.old_ids:  # slots dropped by the removal come back
            if slot_id not in fleet.slots:
                fleet.add_slot(slot_id).down_reason = DownReason.DEPLOYING
                plan.append(slot_id)
        self.removed = {slot_id for slot_id in fleet.slots if slot_id not in self.old_ids}
        for slot in fleet.slots.values():
            slot.backoff.policy = fleet.config.restart
        self.plan = deque(plan)
        self.current = None
        if in_hand is not None:  # its node may still be on its way: wait for the answer
            self.current = in_hand
            self.plan.remove(in_hand.id)
            self._arm(fleet.clock() + fleet.config.timeouts.boot,
                      partial(self._spawn_never_came, in_hand))
            self.owner.deploy_changed()
            return
        self._end_candidate_if_unneeded()
        self._step_back()

    def _needs_old(self, slot: Slot) -> bool:
        return slot.proc is None or slot.proc.version != self.fleet.current

    def _spawn_never_came(self, slot: Slot) -> None:
        self._deadline = None
        if self.current is slot and self.step_in_hand is Step.SPAWNING:
            self._end_candidate()
            self._start_old(slot)

    def _end_candidate_if_unneeded(self) -> None:
        if self.phase is Phase.ROLLING_BACK and self.step_in_hand is not Step.SPAWNING:
            self._end_candidate()

    def _step_back(self) -> None:
        self.step_in_hand = Step.NONE
        while self.plan:
            slot = self.fleet.slots[self.plan.popleft()]
            proc = slot.proc
            if proc is not None and proc.version == self.fleet.current:
                continue  # back already (restarted from the old version meanwhile)
            self.current = slot
            if proc is not None and proc.alive:
                self.step_in_hand = Step.DRAINING
                self.fleet.drain(proc, StopReason.ROLLBACK)
            else:
                self._start_old(slot)
            self.owner.deploy_changed()
            return
        self.current = None
        self._remove_slots()
        self._finish_rollback_if_done()

    def _start_old(self, slot: Slot) -> None:
        self.current = slot
        self.step_in_hand = Step.BOOTING
        self.fleet.start(slot)
        self.owner.deploy_changed()

    def _exit_while_rolling_back(self, slot: Slot, proc: NodeProcess) -> bool:
        if slot is self.current and self.step_in_hand in (Step.DRAINING, Step.SPAWNING):
            self._start_old(slot)
            return True
        if proc.version != self.fleet.current and slot.id in self.old_ids:
            # a new node elsewhere died: the old version there now, not at its turn
            self.fleet.start(slot)
            return True
        return False  # an old node: the usual restart policy

    def _finish_rollback_if_done(self) -> None:
        if (self.phase is Phase.ROLLING_BACK and not self.plan and not self.removed
                and self.step_in_hand is Step.NONE):
            self._finish(Result.ROLLED_BACK, [])

    # ---- ending ----------------------------------------------------------------------------

    def abort(self, why: str) -> None:
        """Quiet or stop: the deploy ends where it is (the owner quiets or stops the nodes)."""
        if self.phase is Phase.DONE:
            return
        self._finish(Result.ABORTED, [why])

    def _finish(self, result: Result, problems: list[str], *, config_stage: bool = False
                ) -> None:
        self.phase = Phase.DONE
        self._disarm()
        self._end_candidate()
        if (result is not Result.DEPLOYED and self.new_version >= 0
                and not any(p.version == self.new_version for p in self.fleet.live())):
            self.fleet.forget_version(self.new_version)
        reason = self.failure or ("\n".join(problems) if problems else None)
        if result is Result.DEPLOYED:
            message = f"reloaded: {self.replaced} node(s) replaced"
        elif result is Result.REJECTED:
            head = ("new config rejected, the old one keeps running" if config_stage
                    else "deploy rejected: every node keeps running the old version")
            message = head + ":\n" + "\n".join(problems)
        elif result is Result.ROLLED_BACK:
            message = (f"deploy rolled back: {self.failure}; every slot runs the old version "
                       f"again")
        else:
            message = f"deploy ended: {reason}"
        self.outcome = Outcome(result, message, reason, self.version_name, self.started,
                               time.time(), self.replaced)
        self.owner.deploy_finished(self.outcome)
