"""A private Postfix instance for ``bench/smtp.py``: Debian's ``postfix``, its own directories.

The instance lives entirely in the directory it is given: ``config/`` (its own ``main.cf`` and
``master.cf``), ``queue/`` (``queue_directory``), ``data/`` (``data_directory``), ``mail/`` (the
Maildirs its ``virtual(8)`` agent delivers into) and ``postfix.log`` (``maillog_file``, through
its own ``postlogd``).  It is started with ``postfix -c DIR start`` and stopped with ``postfix -c
DIR stop``; the system's Postfix (``/etc/postfix``, ``/var/spool/postfix``) is neither read for
its settings nor touched, and need not be stopped.

What it is set to, against Postfix's defaults (everything else is Postfix's default):

- ``smtpd`` only on ``127.0.0.1`` and a free loopback port (a ``master.cf`` line), no chroot
  (the default master.cf's ``y`` needs a copy of the system files in the queue directory);
- the bench's domain as a virtual mailbox domain, its one address mapped to a Maildir (a
  ``hash:`` map made by ``postmap``), delivered as ``nobody``: no system user needed;
- no DNS (``smtp_dns_support_level = disabled``; nothing is relayed anyway), ``myhostname``
  given so that Postfix does not look up its own name, no alias maps (``/etc/aliases`` is the
  system's), ``mynetworks`` only loopback;
- durability as Postfix ships it: ``cleanup(8)`` fsyncs the queue file before ``smtpd`` sends
  its ``250``, the point mailgw's ``250`` is compared with; delivery into the Maildir follows
  asynchronously (``in_flow_delay`` = 1 s, the default, slows ``smtpd`` when arrival outruns
  delivery).

Postfix runs as root (its ``master`` needs it) with ``mail_owner = postfix`` and
``setgid_group = postdrop``; ``postfix start`` (``post-install create-missing``) makes the queue
directories with the owners Postfix expects.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
POSTMAP = "/usr/sbin/postmap"
POSTCONF = "/usr/sbin/postconf"
#: Queue directories that hold a message between its 250 and its delivery.
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def available() -> str | None:
    """None if a private Postfix can run here, else why not."""
    if not Path(POSTFIX).exists():
        return f"{POSTFIX} is missing: apt-get install postfix"
    if os.geteuid() != 0:
        return "Postfix's master must run as root: run the benchmark as root"
    return None


def version() -> str:
    """Postfix's ``mail_version``, or "missing"."""
    if not Path(POSTCONF).exists():
        return "missing"
    done = subprocess.run([POSTCONF, "-d", "-h", "mail_version"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def free_port() -> int:
    """A loopback port free at the moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Postfix:
    """A private Postfix accepting mail for ``recipient`` on a free loopback port."""

    def __init__(self, base: Path, recipient: str) -> None:
        self.base = base
        self.port = free_port()
        self.config = base / "config"
        self.queue = base / "queue"
        self.mail = base / "mail"
        local, domain = recipient.split("@")
        for directory in (self.config, self.queue, self.mail):
            directory.mkdir(parents=True, exist_ok=True)
        owner = pwd.getpwnam("nobody")
        os.chown(self.mail, owner.pw_uid, owner.pw_gid)
        base.chmod(0o755)
        for directory in base.parents:  # virtual(8), as nobody, walks from / to the Maildirs
            if not directory.stat().st_mode & 0o001:
                raise RuntimeError(f"{directory} is not searchable by others: use another --dir")
        (self.config / "vmailbox").write_text(f"{recipient} {domain}/{local}/\n")
        (self.config / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {base / "data"}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {base / "postfix.log"}
maillog_file_prefixes = {base}
syslog_name = postfix-bench
myhostname = postfix.bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination = localhost
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
alias_maps =
alias_database =
biff = no
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = hash:{self.config / "vmailbox"}
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
"""
        )
        (self.config / "master.cf").write_text(MASTER_CF.format(port=self.port))
        subprocess.run([POSTMAP, str(self.config / "vmailbox")], check=True)

    def _postfix(self, command: str) -> None:
        done = subprocess.run(
            [POSTFIX, "-c", str(self.config), command], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"postfix {command}: {done.stdout}{done.stderr}")

    def start(self, timeout: float = 30.0) -> Postfix:
        """``postfix -c DIR start``, then wait until its smtpd answers."""
        self._postfix("start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    if sock.recv(512).startswith(b"220"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postfix did not answer on port {self.port}: {self.log()}")
            time.sleep(0.1)

    def queued(self) -> int:
        """How many messages are accepted but not yet delivered."""
        count = 0
        for name in QUEUES:
            for _, _, files in os.walk(self.queue / name):
                count += len(files)
        return count

    def drain(self, timeout: float = 300.0) -> float:
        """Wait until everything accepted is delivered; return the seconds waited."""
        began = time.monotonic()
        while self.queued():
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"postfix still holds {self.queued()} messages: {self.log()}")
            time.sleep(0.05)
        return time.monotonic() - began

    def log(self) -> str:
        """The end of the instance's log."""
        try:
            return (self.base / "postfix.log").read_text()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """``postfix -c DIR stop`` (waits for its master to exit)."""
        if (self.queue / "pid" / "master.pid").exists():
            self._postfix("stop")
