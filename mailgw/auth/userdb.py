"""The user database: a Dovecot passwd-file, re-read whenever it changes, rewritten atomically.

Every lookup compares the file's ``os.stat`` signature (inode, size, modification time) with the
one last loaded and reloads on a change, so edits by an administrator or by the ``mailgw``
command take effect at once.  A line that cannot be used is logged with its number and skipped;
a file that cannot be read or parsed at all (I/O error, not UTF-8 text, no usable line but
errors) is logged and the last good version stays in force, so a half-written file never locks
everybody out.  A missing file means no users.

Writes hold an ``fcntl`` lock on ``<file>.lock`` (serialising the admin command and servers),
re-read the file, write a temporary file in the same directory, fsync it, rename it over the
file and fsync the directory.  The file is mode 0600 and never holds a plaintext password.
A crash leaves nothing that stops the next write: the lock is released with the process (its
empty file stays), and a temp file it left (``.<file>.<pid>.<thread>.tmp``) is removed by the
next write (``mailgw.durable.remove_stale_temps``).
"""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from twisted.logger import Logger
from zope.interface import implementer

from mailgw.auth import hashing
from mailgw.auth.errors import InvalidAddress, NoSuchUser, PasswdFileError, UserExists
from mailgw.auth.interfaces import IUserDatabase
from mailgw.auth.passwd import (
    PasswdEntry,
    PasswdLine,
    canonical_address,
    entry_line,
    format_text,
    parse_text,
    split_scheme,
)
from mailgw.crashpoint import crash_point
from mailgw.durable import replace_file

log = Logger()


@dataclass(frozen=True)
class _Account:
    """A user in force: the scheme to verify with, or None when the user cannot log in."""

    scheme: str | None
    stored: str


@dataclass(frozen=True)
class _Snapshot:
    """One loaded version of the file."""

    accounts: dict
    #: (st_dev, st_ino, st_size, st_mtime_ns) of the file read, or None for a missing file.
    signature: tuple | None


def _signature(st: os.stat_result) -> tuple:
    """What tells one version of the file from another."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@implementer(IUserDatabase)
class PasswdFileUserDatabase:
    """IUserDatabase over a Dovecot passwd-file; see the module docstring for its promises.

    ``allow_plaintext_schemes``: accept ``{PLAIN}``/``{CLEARTEXT}`` lines (otherwise they are
    ignored with an error logged).  mailgw itself only ever writes ``{ARGON2ID}``.
    """

    def __init__(self, path: Path, allow_plaintext_schemes: bool = False) -> None:
        self.path = Path(path)
        self.allow_plaintext_schemes = allow_plaintext_schemes
        self._lock = threading.Lock()
        self._snapshot = _Snapshot({}, None)
        #: The signature last tried, loaded or not (so a bad file is not re-read each lookup).
        self._tried: tuple | None = None
        self._loaded_once = False

    # Reading

    def canonical(self, address: str) -> str:
        """Return the address stripped and lower-cased; raise InvalidAddress if unusable."""
        return canonical_address(address)

    def exists(self, address: str) -> bool:
        """Is this a user?  False for an unusable address."""
        try:
            address = canonical_address(address)
        except InvalidAddress:
            return False
        return address in self._current().accounts

    def users(self) -> list:
        """Every user's canonical address, sorted."""
        return sorted(self._current().accounts)

    def check_password(self, address: str, password: bytes) -> bool:
        """Verify a password; an unknown user or one who cannot log in costs a dummy ARGON2ID."""
        try:
            account = self._current().accounts.get(canonical_address(address))
        except InvalidAddress:
            account = None
        if account is None or account.scheme is None:
            hashing.verify_dummy(password)
            return False
        return hashing.verify(account.scheme, account.stored, password)

    def password_entry(self, address: str) -> str | None:
        """The password field in force for this user (``{SCHEME}hash``), or None when the user
        is unknown or cannot log in.  It changes whenever the user's password does."""
        try:
            account = self._current().accounts.get(canonical_address(address))
        except InvalidAddress:
            return None
        if account is None or account.scheme is None:
            return None
        return "{" + account.scheme + "}" + account.stored

    def _current(self) -> _Snapshot:
        """The snapshot for the file as it is now, reloading it if it changed."""
        try:
            signature = _signature(os.stat(self.path))
        except FileNotFoundError:
            signature = None
        except OSError as e:
            with self._lock:
                if self._tried != ("error", str(e)):
                    self._tried = ("error", str(e))
                    log.error(
                        "passwd-file {path}: cannot stat: {error}; keeping the last good version",
                        path=str(self.path),
                        error=str(e),
                    )
                return self._snapshot
        with self._lock:
            if self._loaded_once and signature == self._tried:
                return self._snapshot
            self._load(signature)
            return self._snapshot

    def _load(self, signature: tuple | None) -> None:
        """Load the file (the lock is held); keep the last good snapshot if it is unusable."""
        self._loaded_once = True
        if signature is None:
            if self._snapshot.signature is not None:
                log.warn("passwd-file {path} is gone: no users", path=str(self.path))
            self._tried = None
            self._snapshot = _Snapshot({}, None)
            return
        try:
            with open(self.path, "rb") as f:
                signature = _signature(os.fstat(f.fileno()))
                self._tried = signature
                lines = _decode(f.read())
        except (OSError, PasswdFileError) as e:
            self._tried = signature
            log.error(
                "passwd-file {path} cannot be read: {error}; keeping the last good version",
                path=str(self.path),
                error=str(e),
            )
            return
        accounts, errors = self._accounts(lines)
        for number, error in errors:
            log.error(
                "passwd-file {path} line {number}: {error}; line skipped",
                path=str(self.path),
                number=number,
                error=error,
            )
        if errors and not any(line.entry for line in lines):
            log.error(
                "passwd-file {path} has no line in passwd-file format; keeping the last "
                "good version",
                path=str(self.path),
            )
            return
        self._snapshot = _Snapshot(accounts, signature)

    def _accounts(self, lines: list) -> tuple[dict, list]:
        """The users in force and the (line number, reason) of every line skipped."""
        accounts: dict = {}
        errors = []
        for line in lines:
            if line.error is not None:
                errors.append((line.number, line.error))
            if line.entry is None:
                continue
            address = canonical_address(line.entry.user)
            if address in accounts:
                errors.append((line.number, f"duplicate user {address}, the first one counts"))
                continue
            scheme, stored = split_scheme(line.entry.password)
            if scheme is None and not stored:
                accounts[address] = _Account(None, "")
                continue
            try:
                scheme = hashing.resolve_scheme(scheme, stored, self.allow_plaintext_schemes)
            except hashing.PlaintextRefused as e:
                errors.append((line.number, f"user {address}: {e}"))
                continue
            except hashing.UnusableHash as e:
                errors.append((line.number, f"user {address} cannot log in: {e}"))
                scheme = None
            accounts[address] = _Account(scheme, stored)
        return accounts, errors

    # Writing

    def add_user(self, address: str, password: bytes) -> None:
        """Add a user with an {ARGON2ID} hash; raise UserExists or InvalidAddress."""
        address = canonical_address(address)
        field = hashing.hash_password(password)

        def change(lines: list) -> list:
            if _lines_of(lines, address):
                raise UserExists(f"user {address} already exists")
            return [*lines, entry_line(len(lines) + 1, PasswdEntry(address, field))]

        self._rewrite(change)

    def set_password(self, address: str, password: bytes) -> None:
        """Give every line of this user a new {ARGON2ID} hash; raise NoSuchUser."""
        address = canonical_address(address)
        field = hashing.hash_password(password)

        def change(lines: list) -> list:
            mine = _lines_of(lines, address)
            if not mine:
                raise NoSuchUser(f"no user {address}")
            return [
                entry_line(line.number, line.entry.with_password(field))
                if line.number in mine
                else line
                for line in lines
            ]

        self._rewrite(change)

    def remove_user(self, address: str) -> None:
        """Remove every line of this user; raise NoSuchUser."""
        address = canonical_address(address)

        def change(lines: list) -> list:
            mine = _lines_of(lines, address)
            if not mine:
                raise NoSuchUser(f"no user {address}")
            return [line for line in lines if line.number not in mine]

        self._rewrite(change)

    def _rewrite(self, change) -> None:
        """Apply ``change(lines) -> lines`` to the file under the writers' lock, atomically."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _give_to_directory_owner(lock_fd, directory)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                data = b""
            except OSError as e:
                raise PasswdFileError(f"cannot read {self.path}: {e}") from e
            text = format_text(change(_decode(data)))
            replace_file(
                self.path,
                text.encode("utf-8"),
                prepare=partial(_give_to_directory_owner, directory=directory),
                crash_steps=("passwd.temp_written", "passwd.renamed"),
            )
            crash_point("passwd.dir_synced")
        finally:
            os.close(lock_fd)
        log.info("passwd-file {path} rewritten", path=str(self.path))


def _decode(data: bytes) -> list[PasswdLine]:
    """Parse file contents; raise PasswdFileError if they are not text."""
    if b"\0" in data:
        raise PasswdFileError("the file contains NUL bytes: not a passwd-file")
    try:
        return parse_text(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise PasswdFileError(f"the file is not UTF-8 text: {e}") from None


def _lines_of(lines: list, address: str) -> set:
    """The numbers of the lines naming this (canonical) user."""
    return {
        line.number
        for line in lines
        if line.entry is not None and canonical_address(line.entry.user) == address
    }


def _give_to_directory_owner(fd: int, directory: Path) -> None:
    """Run as root, make the file belong to the directory's owner (the user the server runs as).

    So ``mailgw user add`` run by root never leaves a passwd-file the server cannot read."""
    if os.geteuid() == 0:
        owner = directory.stat()
        os.fchown(fd, owner.st_uid, owner.st_gid)
