"""Run the real server, ``twistd -n mailgw``, and the real ``mailgw`` command as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
SERVICES = ("smtp", "pop3", "imap")


def write_config(directory: Path, services=SERVICES, extra: str = "") -> Path:
    """Write a config for a loopback server on ephemeral ports; return its path."""
    listen = "\n".join(f"{name} = tcp:0:interface=127.0.0.1" for name in services)
    path = directory / "mailgw.ini"
    path.write_text(
        f"""[mailgw]
data_dir = {directory / "data"}
hostname = mx.example.test
domains = example.test
ports_file = {directory / "ports.json"}

[listen]
{listen}

[auth]
allow_plaintext = yes

[guard]
delay_start = 0
delay_max = 0
{extra}
"""
    )
    return path


def mailgw(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run the ``mailgw`` admin command; return the completed process (text mode)."""
    return subprocess.run(
        [str(BIN / "mailgw"), "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


class ServerProcess:
    """``twistd -n mailgw --config FILE`` in a subprocess, with its ports from the ports_file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.ports_file = config.parent / "ports.json"
        self.log = config.parent / "twistd.log"
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start the server and wait until every listener is bound (the ports_file appears)."""
        self.ports_file.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "twistd"), "-n", "--pidfile=", "mailgw", "--config", str(self.config)],
                cwd=self.config.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while not self.ports_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited {self.process.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"twistd did not bind in {timeout}s:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.ports = json.loads(self.ports_file.read_text())
        return self

    def kill(self) -> None:
        """SIGKILL the server: no chance to clean up, as in a crash or power loss of the process."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM the server and return its exit status."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=20)
        return self.process.returncode if self.process else 0
