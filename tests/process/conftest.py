from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.process.harness import Swarm


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Callable[..., Swarm]]:
    """Start supervisors with `swarm(config, ...)`; every one is stopped at teardown."""
    started: list[Swarm] = []

    def start(config: dict[str, Any], **kwargs: Any) -> Swarm:
        directory = tmp_path / f"swarm{len(started)}"
        directory.mkdir()
        instance = Swarm(directory, config, **kwargs)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()
