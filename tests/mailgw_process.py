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


def mailgw(
    config: Path,
    *args: str,
    stdin: str | None = None,
    as_user: tuple[int, int] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run the ``mailgw`` admin command; return the completed process (text mode).

    ``as_user`` is a (uid, gid) to run it as (the test must run as root), as an admin does with
    ``sudo -u mail mailgw ...`` so that the files it writes belong to the server's user.
    ``env`` adds environment variables (e.g. ``MAILGW_CRASH_AT``).
    """
    identity = {}
    if as_user is not None:
        identity = {"user": as_user[0], "group": as_user[1], "extra_groups": []}
    return subprocess.run(
        [str(BIN / "mailgw"), "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        **identity,
    )


class ServerProcess:
    """``twistd -n mailgw --config FILE`` in a subprocess, with its ports from the ports_file.

    ``twistd_args`` go before ``mailgw`` (e.g. ``--uid``/``--gid``); ``ports_file`` is where the
    config writes its ports (default ``ports.json`` next to the config).  ``env`` adds
    environment variables to every start (e.g. ``MAILGW_CRASH_AT``); ``start(env=...)`` to one.
    ``wrapper`` is a command line the server runs under (e.g. ``strace -f -o FILE``); then
    ``process`` is the wrapper's, and signals meant for the server must go to its child.
    """

    def __init__(
        self,
        config: Path,
        twistd_args: tuple = (),
        ports_file: Path | None = None,
        env: dict[str, str] | None = None,
        wrapper: tuple = (),
    ) -> None:
        self.config = config
        self.wrapper = tuple(wrapper)
        self.env = dict(env or {})
        self.twistd_args = tuple(twistd_args)
        self.ports_file = ports_file or config.parent / "ports.json"
        self.log = config.parent / "twistd.log"
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 20.0, env: dict[str, str] | None = None) -> ServerProcess:
        """Start the server and wait until every listener is bound (the ports_file appears)."""
        self.ports_file.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.wrapper,
                    str(BIN / "twistd"),
                    "-n",
                    "--pidfile=",
                    *self.twistd_args,
                    "mailgw",
                    "--config",
                    str(self.config),
                ],
                cwd=self.config.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env or {})},
            )
        deadline = time.monotonic() + timeout
        while not self.ports_file.exists():
            if self.process.poll() is not None:
                status = self.process.returncode
                raise RuntimeError(f"twistd exited {status}:\n{self.log.read_text()}")
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
        """SIGTERM the server and return its exit status, 0 for an exit by SIGTERM.

        twistd stops on SIGTERM (listeners closed, ports_file removed) and then ends itself with
        that same signal, as Twisted does for every application: Popen reports that as -15.
        """
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
        if self.process is None or self.process.returncode == -signal.SIGTERM:
            return 0
        return self.process.returncode
