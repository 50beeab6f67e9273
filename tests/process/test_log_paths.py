"""Start-time and log paths that once ended or stalled the supervisor: a stderr nobody reads,
stderr closed or on a full disk, a runtime directory that cannot hold the control socket."""

from __future__ import annotations

import os
import signal

from tests.process.harness import base_config, wait_for


def test_a_stderr_nobody_reads_never_stops_the_loop(swarm):
    r, w = os.pipe()  # the test holds the read end and does not read it (a stuck pager)
    try:
        # no output limit: what is tested is the stderr queue's own bound
        s = swarm(base_config(nodes=2, app="swarmd_testapps:print_flood",
                              env={"TESTAPP_ONLY_NODE": "0", "TESTAPP_FLOOD_SECONDS": "4"},
                              output={"rate": "unlimited"}),
                  watchdog_usec=1_000_000, preexec=lambda: (os.dup2(w, 1), os.dup2(w, 2)))
        s.wait_ready()
        pings = len(s.notify.values("WATCHDOG"))
        # 64 KiB of pipe were full long ago: a loop that waited on it would ping no more
        wait_for(lambda: len(s.notify.values("WATCHDOG")) >= pings + 6, 30,
                 "6 more watchdog pings while stderr is not read")
        assert s.nodes()[1]["state"] == "running"  # and it answers the control socket
        os.set_blocking(r, False)
        seen = bytearray()

        def drop_count_line() -> bool:
            try:
                while chunk := os.read(r, 1 << 20):
                    seen.extend(chunk)
            except BlockingIOError:
                pass
            if b"line(s) dropped: stderr did not take them fast enough" in seen:
                return True
            # the nodes write their stacks: lines that also push the queue out, should the
            # loop not watch stderr for write-readiness
            s.signal(signal.SIGTTIN)
            return False
        wait_for(drop_count_line, 60, "the drop count line once stderr is read again")
        assert b"swarmd-node[0] node 0 flood line" in seen
        s.signal(signal.SIGTERM)
        assert s.wait_exit() == 0
    finally:
        os.close(r)
        os.close(w)


def test_a_closed_stderr_is_survived(swarm):
    s = swarm(base_config(nodes=1), preexec=lambda: os.close(2))
    s.wait_ready()
    assert s.nodes()[0]["state"] == "running"
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0


def test_stderr_on_a_full_disk_and_no_runtime_directory_are_survived(swarm, tmp_path):
    def full_stderr() -> None:
        fd = os.open("/dev/full", os.O_WRONLY)
        os.dup2(fd, 2)
        os.dup2(fd, 1)
    s = swarm(base_config(nodes=1), preexec=full_stderr,
              env={"RUNTIME_DIRECTORY": "/proc/swarmd-test"})  # cannot be created
    s.wait_ready()
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0
