"""Three local nats-server processes forming one JetStream cluster, on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from qraft_core.bus.embedded import free_port, nats_server_binary, process_alive


@dataclass
class NatsCluster:
    directory: Path
    size: int = 3
    client_ports: list[int] = field(default_factory=list)
    route_ports: list[int] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f"n{i}" for i in range(self.size)]

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{port}" for port in self.client_ports]

    def start(self) -> NatsCluster:
        self.client_ports = [free_port() for _ in range(self.size)]
        self.route_ports = [free_port() for _ in range(self.size)]
        for name in self.names:
            self.start_node(name)
        return self

    def start_node(self, name: str) -> None:
        index = self.names.index(name)
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.route_ports)
        log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.processes[name] = subprocess.Popen(
            [nats_server_binary(), "-n", name, "-a", "127.0.0.1", "-p", str(self.client_ports[index]), "-js",
             "-sd", str(self.directory / name), "--cluster_name", "qraft",
             "--cluster", f"nats://127.0.0.1:{self.route_ports[index]}", "--routes", routes],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process_alive(process.pid) and process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
