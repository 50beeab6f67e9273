"""The config as immutable named tuples, and as plain data.

The supervisor never parses YAML: the loader process (swarmd/candidate/) validates the file and
hands the result over as plain data (JSON), which `from_data` turns back into a Config. The same
data crosses the supervisor's re-exec at the end of a deploy.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from swarmd.config.checker import ConfigError as ConfigError  # re-exported
from swarmd.config.health import HealthCode, HealthTable
from swarmd.config.limits import Limits
from swarmd.config.metrics import MetricsConfig
from swarmd.config.output import OutputLimit

DEFAULT_PATH = "/etc/swarmd.yaml"
RESERVED_ENV = ("SWARMD_NODE_ID", "SWARMD_NODE_GENERATION", "SWARMD_HEALTH_FD",
                "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Timeouts(NamedTuple):
    boot: float = 60.0
    report: float = 60.0
    shutdown: float = 30.0
    drain: float = 30.0


class RestartPolicy(NamedTuple):
    delay: float = 1.0
    max_delay: float = 60.0
    reset_after: float = 60.0
    give_up_after: int = 10


class Config(NamedTuple):
    nodes: int = 4
    app: str = "swarmd.demo:run"
    command: tuple[str, ...] | None = None
    preload: bool = True
    node_id_offset: int = 0
    env: Mapping[str, str] = MappingProxyType({})
    timeouts: Timeouts = Timeouts()
    restart: RestartPolicy = RestartPolicy()
    reload: str = "rolling"
    health: HealthTable = HealthTable()
    output: OutputLimit = OutputLimit()
    limits: Limits = Limits()
    metrics: MetricsConfig = MetricsConfig()
    path: str | None = None

    @property
    def node_ids(self) -> range:
        return range(self.node_id_offset, self.node_id_offset + self.nodes)


def to_data(config: Config) -> dict[str, Any]:
    """Plain data (JSON-safe) holding everything a Config holds."""
    return {
        "nodes": config.nodes, "app": config.app,
        "command": list(config.command) if config.command is not None else None,
        "preload": config.preload, "node_id_offset": config.node_id_offset,
        "env": dict(config.env), "timeouts": config.timeouts._asdict(),
        "restart": config.restart._asdict(), "reload": config.reload,
        "health": {str(code): {"name": info.name, "priority": info.priority,
                               "action": info.action}
                   for code, info in config.health.codes.items()},
        "output": config.output._asdict(), "limits": config.limits._asdict(),
        "metrics": config.metrics._asdict(), "path": config.path,
    }


def from_data(data: Mapping[str, Any]) -> Config:
    """The Config that `to_data` described (trusted data: made by swarmd itself)."""
    command = data.get("command")
    return Config(
        nodes=int(data["nodes"]), app=str(data["app"]),
        command=tuple(command) if command is not None else None,
        preload=bool(data["preload"]), node_id_offset=int(data["node_id_offset"]),
        env=MappingProxyType(dict(data["env"])), timeouts=Timeouts(**data["timeouts"]),
        restart=RestartPolicy(**data["restart"]), reload=str(data["reload"]),
        health=HealthTable({int(code): HealthCode(int(code), info["name"], info["priority"],
                                                  info["action"])
                            for code, info in data["health"].items()}),
        output=OutputLimit(**data["output"]), limits=Limits(**data.get("limits", {})),
        metrics=MetricsConfig(**data.get("metrics", {})), path=data.get("path"),
    )
