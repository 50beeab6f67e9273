"""Heartbeats in shared memory: a node that goes on being healthy says so without a write to
its pipe, so a fleet at rest costs the supervisor no wake-up and no read per report.

One memfd per fleet, made by the supervisor before its first fork and mapped by every process
that forks nodes (the supervisor; a first start's loader, its fork; a deploy's candidate, by
fd); each node inherits the mapping. Entry `id % CAPACITY` holds the pid beating there, a count
and the CLOCK_MONOTONIC time of its last beat. Only a 0 after a 0 the supervisor has been sent
becomes a beat: a first report, any other code, a change of code and metrics still go over the
pipe at once. The supervisor reads an entry only when it needs to know (a report deadline,
status, a scrape, the node's end), and trusts it only while it holds that node's pid.
"""

from __future__ import annotations

import mmap
import os
import struct

ENTRY = struct.Struct("=IIQd")  # pid, unused, beats, CLOCK_MONOTONIC of the last (24 bytes)
PID = struct.Struct("=I")
SLOT = 32  # bytes per entry: aligned, so each field is written in one store
CAPACITY = 8192  # entries: twice MAX_NODES, so the ids of one config never share one
SIZE = CAPACITY * SLOT  # 256 KiB of address space; pages are only made where nodes beat


class BeatTable:
    """The fleet's heartbeat entries, mapped in this process."""

    def __init__(self, fd: int, mapping: mmap.mmap) -> None:
        self.fd = fd
        self._map = mapping
        self.fds = [fd, *_mapping_fds(fd)]  # every fd of it here: a forked node closes them

    @classmethod
    def create(cls) -> BeatTable | None:
        """A new table; None where memfds or shared mappings are refused (nodes then report
        every time over their pipes, as command nodes always do)."""
        try:
            fd = os.memfd_create("swarmd-heartbeats", os.MFD_CLOEXEC)
        except (OSError, AttributeError):
            return None
        try:
            os.ftruncate(fd, SIZE)
            return cls(fd, mmap.mmap(fd, SIZE))
        except OSError:
            os.close(fd)
            return None

    @classmethod
    def open(cls, fd: int) -> BeatTable | None:
        """The table another process made, from its fd (a candidate's, a re-exec's); None
        when the fd is not one (the nodes' reports still come over the pipes)."""
        try:
            if os.fstat(fd).st_size != SIZE:
                return None
            os.set_inheritable(fd, False)
            return cls(fd, mmap.mmap(fd, SIZE))
        except (OSError, ValueError):
            return None

    @staticmethod
    def offset(node_id: int) -> int:
        return (node_id % CAPACITY) * SLOT

    def writer(self, node_id: int) -> BeatWriter:
        """For the node with `node_id` (built before its fork, used in it)."""
        return BeatWriter(self._map, self.offset(node_id))

    def read(self, node_id: int, pid: int) -> tuple[int, float] | None:
        """(beats, time of the last) of the process `pid`; None when it never beat here."""
        entry_pid, _, beats, at = ENTRY.unpack_from(self._map, self.offset(node_id))
        return (beats, at) if entry_pid == pid else None

    def clear(self, node_id: int, pid: int) -> None:
        """Forget the entry of `pid`, which ended (another node may have taken it since)."""
        offset = self.offset(node_id)
        if PID.unpack_from(self._map, offset)[0] == pid:
            ENTRY.pack_into(self._map, offset, 0, 0, 0, 0.0)

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


def _mapping_fds(fd: int) -> list[int]:
    """The fds of the same file besides `fd`: the copy mmap.mmap keeps of the fd it maps
    (Python has no way to tell which it is, nor, before 3.13, not to keep one)."""
    try:
        st = os.fstat(fd)
        others = []
        for name in os.listdir("/proc/self/fd"):
            other = int(name)
            if other != fd:
                try:
                    same = os.fstat(other)
                except OSError:  # the listing's own fd, closed by now
                    continue
                if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino):
                    others.append(other)
        return others
    except OSError:
        return []


class BeatWriter:
    """A node's side: one entry, claimed at its first beat."""

    __slots__ = ("_map", "_offset", "_pid", "_beats")

    def __init__(self, mapping: mmap.mmap, offset: int) -> None:
        self._map = mapping
        self._offset = offset
        self._pid = 0  # claimed by the first beat (the writer is made before the fork)
        self._beats = 0

    def beat(self, now: float) -> bool:
        """Count a healthy report; False when the entry is no longer ours (another node of
        an id CAPACITY apart took it): report over the pipe from then on."""
        if self._pid == 0:
            self._pid = os.getpid()
        elif PID.unpack_from(self._map, self._offset)[0] != self._pid:
            return False
        self._beats += 1
        ENTRY.pack_into(self._map, self._offset, self._pid, 0, self._beats, now)
        return True
