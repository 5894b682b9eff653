"""What a running lab is made of, kept as JSON in its run directory so every `lab` command (and
`lab down` after a crash) finds it. Values are frozen; a change writes a new document."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import attrs

DEFAULT_RUN_ROOT = Path("/run/calico-bgp-lab")
STATE_FILE = "state.json"


class LabNotUp(RuntimeError):
    """No lab state in the run directory."""


@attrs.frozen
class Agent:
    node: str
    ns: str
    pid: int
    argv: tuple[str, ...]
    log: str


@attrs.frozen
class Workload:
    node: str
    ns: str
    ip: str


@attrs.frozen
class Etcd:
    pid: int
    url: str
    unix_url: str
    data_dir: str
    argv: tuple[str, ...]


@attrs.frozen
class LabState:
    name: str
    topology: str
    run_dir: str
    tag: str
    etcd: Etcd
    namespaces: Mapping[str, str]                  # topology node -> namespace
    routers: Mapping[str, tuple[int, ...]]         # router node -> daemon pids
    agents: Mapping[str, Agent] = attrs.field(factory=dict)
    workloads: Mapping[str, Workload] = attrs.field(factory=dict)
    mgmt_ns: str = ""
    up_seconds: float = 0.0
    started: float = 0.0

    @property
    def etcd_endpoint(self) -> str:
        return self.etcd.url


def run_dir_for(name: str) -> Path:
    return DEFAULT_RUN_ROOT / name


def save(state: LabState) -> None:
    path = Path(state.run_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(attrs.asdict(state), indent=2, sort_keys=True))
    os.replace(tmp, path)


def load(run_dir: Path) -> LabState:
    path = Path(run_dir) / STATE_FILE
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabNotUp(f"no lab is up in {run_dir} (no {STATE_FILE}); `calico-bgp lab up FILE` first") from None
    raw["etcd"] = Etcd(**{**raw["etcd"], "argv": tuple(raw["etcd"]["argv"])})
    raw["agents"] = {k: Agent(**{**v, "argv": tuple(v["argv"])}) for k, v in raw.get("agents", {}).items()}
    raw["workloads"] = {k: Workload(**v) for k, v in raw.get("workloads", {}).items()}
    raw["routers"] = {k: tuple(v) for k, v in raw.get("routers", {}).items()}
    return LabState(**raw)
