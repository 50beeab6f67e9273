"""Process titles (swarmd.node.titles): the texts, and what /proc and ps show after a fork."""

from __future__ import annotations

import os
import subprocess

from swarmd.node import titles


def test_title_texts() -> None:
    assert titles.supervisor_title("/etc/swarmd.yaml") == "swarmd: supervisor /etc/swarmd.yaml"
    assert titles.node_title(3, 2, "myapp.worker:run") == "swarmd: node 3 (gen 2) myapp.worker:run"
    assert titles.node_title(0, 0, titles.node_title) == (
        "swarmd: node 0 (gen 0) swarmd.node.titles:node_title")


def test_a_forked_node_shows_its_title_in_proc_and_ps() -> None:
    assert titles.load(), "setproctitle is a dependency of swarmd: pip install setproctitle"
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a node: set the title, say so, wait to be looked at
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            code = 0 if titles.set_title(titles.node_title(3, 2, "myapp.worker:run")) else 2
            os.write(ready_w, b"x")
            os.read(done_r, 1)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"x"
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
        assert cmdline.rstrip(b"\0") == b"swarmd: node 3 (gen 2) myapp.worker:run"
        ps = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True,
                            text=True, check=True).stdout.strip()
        assert ps == "swarmd: node 3 (gen 2) myapp.worker:run"
        with open(f"/proc/{pid}/comm") as handle:
            assert handle.read().strip() == "swarmd: node 3"  # 15 characters: top, ps -e
    finally:
        os.write(done_w, b"x")
        os.close(done_w)
        os.close(ready_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
