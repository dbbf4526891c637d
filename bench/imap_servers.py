"""The two IMAP servers of ``bench/imap.py`` and how their memory is read from ``/proc``.

Both servers get limits high enough for the benchmark's 500 idle sessions from one address and
a handful of users: mailgw's ``[limits]`` (defaults: ``connections`` 500, ``connections_per_ip``
200, ``sessions_per_user`` 50, ``sessions_per_user_ip`` 10) and Dovecot's
``mail_max_userip_connections`` (default 10) and process limits (``default_process_limit``
100 for imap-login, ``service imap { process_limit }`` 1024).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pop3 import DOMAIN, HOSTNAME, Dovecot, ServerProcess

#: The raised caps, for both servers (more than the idle sessions plus the measuring ones).
SESSION_CAP = 1000

MAILGW_LIMITS = {
    "connections": SESSION_CAP,
    "connections_per_ip": SESSION_CAP,
    "sessions_per_user": SESSION_CAP,
    "sessions_per_user_ip": SESSION_CAP,
}
#: Dovecot's configuration beyond bench/pop3.py's: COMPRESS=DEFLATE (its imap_zlib plugin, which
#: does not need the zlib plugin for stored mail) and the raised limits.
DOVECOT_EXTRA = f"""protocol imap {{
  mail_plugins = $mail_plugins imap_zlib
}}
mail_max_userip_connections = {SESSION_CAP}
default_process_limit = {SESSION_CAP}
default_client_limit = {4 * SESSION_CAP}
service imap {{
  process_limit = {SESSION_CAP}
}}
service anvil {{
  client_limit = {4 * SESSION_CAP}
}}
"""
#: What the table's notes say about the raised limits.
LIMITS_NOTE = (
    "limits raised for the idle sessions: mailgw [limits] "
    + ", ".join(f"{key} = {value}" for key, value in MAILGW_LIMITS.items())
    + f"; Dovecot mail_max_userip_connections, default_process_limit and imap process_limit"
    f" = {SESSION_CAP}"
)


class DovecotIMAP(Dovecot):
    """bench/pop3.py's Dovecot, configured for IMAP instead of POP3, with COMPRESS=DEFLATE and
    the raised limits."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        text = self.conf.read_text()
        for old, new in (
            ("protocols = pop3", "protocols = imap"),
            ("service pop3-login", "service imap-login"),
            ("inet_listener pop3 ", "inet_listener imap "),
            ("inet_listener pop3s", "inet_listener imaps"),
        ):
            if old not in text:
                raise SystemExit(f"bench/pop3.py's Dovecot configuration changed: no {old!r}")
            text = text.replace(old, new)
        self.conf.write_text(text + DOVECOT_EXTRA)

    @property
    def pid(self) -> int:
        """The master process's pid."""
        return self.process.pid


def start_mailgw(base: Path, name: str = "imap") -> ServerProcess:
    """``twistd -n mailgw`` with an imap listener on a free loopback port, data in base/data,
    the raised limits; its config, ports file and log are named after ``name``."""
    config = base / f"mailgw-{name}.ini"
    limits = "".join(f"{key} = {value}\n" for key, value in MAILGW_LIMITS.items())
    config.write_text(
        f"[mailgw]\ndata_dir = {base / 'data'}\nhostname = {HOSTNAME}\ndomains = {DOMAIN}\n"
        f"ports_file = {base / f'ports-{name}.json'}\n\n"
        "[listen]\nimap = tcp:0:interface=127.0.0.1\n\n"
        "[auth]\nallow_plaintext = yes\n\n[guard]\ndelay_start = 0\ndelay_max = 0\n\n"
        f"[limits]\n{limits}"
    )
    server = ServerProcess(config, ports_file=base / f"ports-{name}.json")
    server.log = base / f"twistd-{name}.log"
    return server.start(timeout=60)


# -- memory ------------------------------------------------------------------------------------


def status_kb(pid: int, key: str) -> int:
    """``key`` (VmRSS, VmHWM...) of ``/proc/<pid>/status`` in KB; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size in KB (shared pages divided among their sharers); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tree(root: int) -> dict[int, str]:
    """``root`` and all its descendants now: pid -> command name."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parents[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), name)
    found = {root: parents.get(root, (0, "?"))[1]}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, name) in parents.items():
            if ppid in found and pid not in found:
                found[pid] = name
                grew = True
    return found


class TreeSampler(threading.Thread):
    """Samples a process tree every ``interval`` s: the highest sum of Pss and of VmRSS over
    all its processes, and the highest VmHWM of one process named ``worker`` (KB)."""

    def __init__(self, root: int, worker: str = "imap", interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.worker, self.interval = root, worker, interval
        self.pss = self.rss = self.worker_hwm = 0
        self._done = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Take one sample now."""
        with self._lock:
            self._sample()

    def _sample(self) -> None:
        processes = tree(self.root)
        self.pss = max(self.pss, sum(pss_kb(pid) for pid in processes))
        self.rss = max(self.rss, sum(status_kb(pid, "VmRSS") for pid in processes))
        for pid, name in processes.items():
            if name == self.worker:
                self.worker_hwm = max(self.worker_hwm, status_kb(pid, "VmHWM"))

    def run(self) -> None:
        """Sample until stopped."""
        while not self._done.wait(self.interval):
            self.sample()

    def peaks(self) -> tuple[int, int, int]:
        """(Pss sum, VmRSS sum, one worker's VmHWM) peaks so far, after one more sample."""
        self.sample()
        return self.pss, self.rss, self.worker_hwm

    def stop(self) -> None:
        """End the sampling."""
        self._done.set()
        self.join()
