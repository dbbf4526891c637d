"""Modification sequences of one folder (RFC 7162 CONDSTORE and QRESYNC): mailgw's own index.

The file ``mailgw-modseq`` beside ``dovecot-uidlist`` holds, for every message, the modseq of
its last change and the flags (as a mask of Maildir flag letters) it had from then on; the
folder's highest modseq; and the UIDs expunged lately, each with the modseq of its expunge
(QRESYNC's VANISHED).  Dovecot never reads it, and the Maildir's own files (``dovecot-uidlist``,
``dovecot-keywords``, the flags in file names) stay exactly as Dovecot writes them.

Layout: a header line ``mailgw-modseq 1 V<uidvalidity> H<highest> F<floor> N<messages>
E<expunges> G<token>``; a snapshot (little-endian arrays: the N UIDs as u32, their modseqs as
u64 and flag masks as u32, then the E expunged UIDs as u32 and their modseqs as u64); then one
text line per change, appended and fsync'd:

    <modseq> M <uid>=<letters> ...    these messages have had these flag letters since <modseq>
    <modseq> X <uid> ...              these messages were expunged at <modseq>

The lines of one change share its modseq, one above the highest before it, so a line's modseq
is never reused.  Once the lines take more than ``COMPACT_MIN_TAIL`` octets and a quarter of the
snapshot, or the expunges remembered are more than twice ``VANISHED_KEPT``, the file is rewritten
(compacted) with a new snapshot and no lines, keeping the latest ``VANISHED_KEPT`` expunges; the
floor rises to the modseq of the last one dropped, below which ``vanished_since`` answers None.
A folder that never had the index gets one at its first open, every message at modseq 1.

A torn last line (a crash during an append) is ignored and cut away by the next append.  A
header or snapshot that cannot be read (damage no crash makes: they are only ever written whole,
then renamed or linked into place) is set aside as ``mailgw-modseq.broken`` and the index starts
again, above every modseq the lost one can have given out (``restart_modseq``), so a client
that synced before the damage resyncs instead of missing changes.

Writers in other processes are serialised by an ``flock`` of the file (a compaction replaces
the file, so a writer checks, once it holds the lock, that its file is still the one in place);
threads are serialised by the folder's lock: a ``ModseqLog`` is not thread-safe itself.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mailgw.crashpoint import crash_point
from mailgw.durable import append_whole, remove_stale_temps, replace_file
from mailgw.store.files import FILE_MODE, fsync_dir, store_error, write_all
from mailgw.store.interfaces import SYSTEM_FLAGS, StoreError

MODSEQ_FILE = "mailgw-modseq"
_MAGIC = "mailgw-modseq"
_VERSION = "1"
#: At least this many of the latest expunges are remembered for ``vanished_since`` (Dovecot
#: keeps them in its transaction log until the log rotates, which is of the same order).
VANISHED_KEPT = 10_000
#: The appended lines are compacted into a new snapshot once they take more than this many
#: octets and more than ``COMPACT_TAIL_PER_MESSAGE`` per message (a quarter of the snapshot's).
COMPACT_MIN_TAIL = 64 * 1024
COMPACT_TAIL_PER_MESSAGE = 4

#: The Maildir flag letters that stand for IMAP flags: the system flags' and the keywords'.
FLAG_LETTERS = "".join(sorted(SYSTEM_FLAGS.values())) + "abcdefghijklmnopqrstuvwxyz"
_BIT = {letter: 1 << n for n, letter in enumerate(FLAG_LETTERS)}
_MASK_CACHE_SIZE = 4096
_masks: dict[str | None, int] = {}
_letters: dict[int, str] = {}

_U32, _U64 = "I", "Q"
if array(_U32).itemsize != 4 or array(_U64).itemsize != 8:  # pragma: no cover
    raise ImportError("mailgw.store.modseq needs 4-octet 'I' and 8-octet 'Q' arrays")


def flag_mask(info: str | None) -> int:
    """The flags a Maildir info part (the text after ':' in a file name) stands for, as a mask.

    Letters that are no IMAP flag (``P``, passed) do not count: changing them changes nothing
    an IMAP client sees, so it takes no modseq."""
    mask = _masks.get(info)
    if mask is None:
        mask = 0
        if info and info.startswith("2,"):
            for letter in info[2:]:
                mask |= _BIT.get(letter, 0)
        if len(_masks) >= _MASK_CACHE_SIZE:
            _masks.clear()
        _masks[info] = mask
    return mask


def _letters_of(mask: int) -> str:
    letters = _letters.get(mask)
    if letters is None:
        letters = "".join(letter for letter, bit in _BIT.items() if mask & bit)
        if len(_letters) >= _MASK_CACHE_SIZE:
            _letters.clear()
        _letters[mask] = letters
    return letters


def _mask_of_letters(letters: str) -> int:
    return flag_mask("2," + letters)


class ModseqLog:
    """The modseq index of the folder directory ``directory`` (see the module docstring).

    ``state`` maps each live UID the index knows to ``(modseq, flag mask)``; ``expunged`` maps
    expunged UIDs to the modseq of their expunge, in ascending modseq order.  ``exists`` is
    False until ``create`` made the file (or when the one there belongs to an earlier
    incarnation of the folder, another UIDVALIDITY)."""

    def __init__(self, directory: Path, uid_validity: int) -> None:
        """Read the index of ``directory`` if there is one for ``uid_validity``."""
        self.directory = directory
        self.path = directory / MODSEQ_FILE
        self.uid_validity = uid_validity
        self.state: dict[int, tuple[int, int]] = {}
        self.expunged: dict[int, int] = {}
        self.highest = 1
        self.floor = 1
        self.exists = False
        self._token = ""
        self._ino = -1
        self._snapshot_end = 0
        #: End of the last whole line read: where the next append goes.
        self._offset = 0
        self._lock_fd: int | None = None
        self.refresh()

    # -- reading

    def refresh(self) -> None:
        """Read what other processes appended since the last look; reload after a rewrite."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._forget()
            return
        except OSError as e:
            raise store_error(f"cannot read {self.path}", e) from e
        if st.st_ino == self._ino and st.st_size == self._offset:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self._forget()
            return
        except OSError as e:
            raise store_error(f"cannot read {self.path}", e) from e
        try:
            self._sync(fd)
        finally:
            os.close(fd)

    def modseq_of(self, uid: int) -> int | None:
        """The modseq of the last change the index knows of live message ``uid``, or None."""
        entry = self.state.get(uid)
        return entry[0] if entry is not None else None

    def vanished_since(self, modseq: int) -> list[int] | None:
        """UIDs expunged at a modseq above ``modseq``, ascending; None if the index may have
        forgotten some (``modseq`` below the floor) or never gave ``modseq`` (above the
        highest)."""
        if modseq < self.floor or modseq > self.highest:
            return None
        return sorted(uid for uid, when in self.expunged.items() if when > modseq)

    def _forget(self) -> None:
        self.exists = False
        self._ino = -1
        self._offset = 0

    def _sync(self, fd: int) -> None:
        """Bring the state up to date with the open file ``fd``."""
        try:
            st = os.fstat(fd)
            if st.st_ino == self._ino and st.st_size == self._offset:
                return
            if st.st_ino == self._ino and st.st_size > self._offset and self._same_file(fd):
                self._read_lines(os.pread(fd, st.st_size - self._offset, self._offset))
                return
            data = _read_all(fd, st.st_size)
        except OSError as e:
            raise store_error(f"cannot read {self.path}", e) from e
        self._ino = st.st_ino
        self._load(data)

    def _same_file(self, fd: int) -> bool:
        """Is the file at ``fd`` the one last read (not a new one that got its inode number)?"""
        head = os.pread(fd, 200, 0)
        return f" G{self._token}\n".encode() in head

    def _load(self, data: bytes) -> None:
        header = _usable_header(data, self.uid_validity)
        if header is None:
            self._set_aside(damaged=not _of_other_uid_validity(data, self.uid_validity))
            return
        start = data.find(b"\n") + 1
        count, expunges = header["N"], header["E"]
        uids, modseqs, masks, gone_uids, gone_modseqs = _unpack(data, start, count, expunges)
        self.state = dict(zip(uids, zip(modseqs, masks, strict=True), strict=True))
        self.expunged = dict(zip(gone_uids, gone_modseqs, strict=True))
        self.highest = header["H"]
        self.floor = header["F"]
        self._token = header["G"]
        self._snapshot_end = self._offset = start + 16 * count + 12 * expunges
        self.exists = True
        self._read_lines(data[self._snapshot_end :])

    def _set_aside(self, damaged: bool) -> None:
        """The file is of another UIDVALIDITY or unreadable: as if there were none (``create``
        moves it out of the way).  A damaged file of this UIDVALIDITY may have given out any
        modseq, so the new index starts above all it can have given (``restart_modseq``)."""
        self.state, self.expunged = {}, {}
        self.highest = self.floor = restart_modseq() if damaged else 1
        self._forget()

    def _read_lines(self, data: bytes) -> None:
        """Apply the whole lines of ``data`` (read at ``_offset``); a torn last one waits."""
        end = data.rfind(b"\n") + 1
        if end == 0:
            return
        state, expunged = self.state, self.expunged
        highest = self.highest
        for line in data[:end].decode("ascii", "replace").split("\n"):
            fields = line.split()
            if len(fields) < 2 or not fields[0].isdigit():
                continue
            modseq = int(fields[0])
            if fields[1] == "M":
                for item in fields[2:]:
                    uid, sep, letters = item.partition("=")
                    if sep and uid.isdigit():
                        state[int(uid)] = (modseq, _mask_of_letters(letters))
                        expunged.pop(int(uid), None)
            elif fields[1] == "X":
                for item in fields[2:]:
                    if item.isdigit():
                        uid = int(item)
                        state.pop(uid, None)
                        expunged.pop(uid, None)
                        expunged[uid] = modseq
            else:
                continue
            highest = max(highest, modseq)
        self.highest = highest
        self._offset += end

    # -- writing

    def create(self, masks: Mapping[int, int]) -> None:
        """Make the index: these live UIDs (with their flag masks) at modseq 1, the highest 1.

        If another process made it first, read that one instead.  If the file was there and
        went away (this index had read it), every UID starts above the highest read, and the
        floor with it: the expunges are forgotten."""
        self.refresh()
        if self.exists:
            return
        start = 1 if self.highest == 1 else self.highest + 1
        state = {uid: (start, mask) for uid, mask in masks.items()}
        data = _snapshot(self.uid_validity, start, start, uuid.uuid4().hex, state, {})
        tmp = self.path.with_name(f".{MODSEQ_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self._discard_unusable()
            tmp.unlink(missing_ok=True)  # a dead writer's, whose pid and thread this one has
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process made it first
            finally:
                os.unlink(tmp)
            crash_point("modseq.created")
            fsync_dir(self.directory)
        except OSError as e:
            raise store_error(f"cannot create {self.path}", e) from e
        remove_stale_temps(self.path)
        self.refresh()
        if not self.exists:
            raise StoreError(f"cannot read {self.path} just created")

    def _discard_unusable(self) -> None:
        """Move an unusable file (see ``_set_aside``) to ``mailgw-modseq.broken``, under its
        lock and only if it is still in place and still unusable: another process may have
        replaced it with a good one meanwhile."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            try:
                in_place = os.stat(self.path).st_ino == st.st_ino
            except FileNotFoundError:
                in_place = False
            if in_place and _usable_header(_read_all(fd, st.st_size), self.uid_validity) is None:
                os.replace(self.path, self.path.with_name(MODSEQ_FILE + ".broken"))
        finally:
            os.close(fd)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writers' lock (and be up to date) for the block; ``record`` needs it."""
        fd = self._open_locked()
        self._lock_fd = fd
        try:
            self._sync(fd)
            if not self.exists:
                raise StoreError(f"{self.path} is not this folder's modseq index")
            yield
            if self._needs_compaction():
                try:
                    self._compact()
                except StoreError:
                    pass  # the lines stay valid: compacted at a later change
        finally:
            self._lock_fd = None
            os.close(fd)

    def record(self, masks: Mapping[int, int], gone: Iterable[int] = ()) -> int | None:
        """Record that these live UIDs have these flag masks and that ``gone`` are expunged, at
        one new modseq, in one fsync'd append; return it (None when both are empty).

        Call inside ``locked()``; raise StoreError (the index then says what it said before)."""
        if self._lock_fd is None:
            raise StoreError("modseq index written without its lock")
        state = self.state
        changed = dict(masks)
        removed = sorted(set(gone) - changed.keys())
        if not changed and not removed:
            return None
        modseq = self.highest + 1
        lines = []
        if changed:
            items = " ".join(f"{uid}={_letters_of(mask)}" for uid, mask in sorted(changed.items()))
            lines.append(f"{modseq} M {items}\n")
        if removed:
            lines.append(f"{modseq} X {' '.join(map(str, removed))}\n")
        self._append("".join(lines).encode("ascii"))
        crash_point("modseq.logged")
        for uid, mask in changed.items():
            state[uid] = (modseq, mask)
            self.expunged.pop(uid, None)
        for uid in removed:
            state.pop(uid, None)
            self.expunged.pop(uid, None)
            self.expunged[uid] = modseq
        self.highest = modseq
        return modseq

    def _open_locked(self) -> int:
        """An fd of the file in place, with its ``flock`` held."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR)
            except OSError as e:
                raise store_error(f"cannot open {self.path}", e) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass  # replaced and the new one not yet in place: look again
            except OSError as e:
                os.close(fd)
                raise store_error(f"cannot lock {self.path}", e) from e
            os.close(fd)

    def _append(self, data: bytes) -> None:
        fd = self._lock_fd
        try:
            append_whole(fd, self._offset, data)  # a torn line is cut away first
        except OSError as e:
            try:
                os.ftruncate(fd, self._offset)
            except OSError:
                pass
            raise store_error(f"cannot append to {self.path}", e) from e
        self._offset += len(data)

    def _needs_compaction(self) -> bool:
        tail = self._offset - self._snapshot_end
        if tail > max(COMPACT_MIN_TAIL, COMPACT_TAIL_PER_MESSAGE * len(self.state)):
            return True
        return len(self.expunged) > 2 * VANISHED_KEPT

    def _compact(self) -> None:
        """Rewrite the file as a snapshot of the state, keeping the latest expunges."""
        expunged = self.expunged
        floor = self.floor
        if len(expunged) > VANISHED_KEPT:
            items = list(expunged.items())
            floor = max(floor, items[-VANISHED_KEPT - 1][1])
            expunged = dict(items[-VANISHED_KEPT:])
        token = uuid.uuid4().hex
        data = _snapshot(self.uid_validity, self.highest, floor, token, self.state, expunged)
        try:
            replace_file(
                self.path,
                data,
                FILE_MODE,
                crash_steps=("modseq.compact_written", "modseq.compact_renamed"),
            )
            ino = os.stat(self.path).st_ino
        except OSError as e:
            raise store_error(f"cannot rewrite {self.path}", e) from e
        self.expunged = expunged
        self.floor = floor
        self._token = token
        self._ino = ino
        self._snapshot_end = self._offset = len(data)


def restart_modseq() -> int:
    """Where modseqs go on after their index was lost: the milliseconds since 1970, above every
    modseq the lost index gave out unless it gave out more than one a millisecond."""
    return int(time.time() * 1000)


def _of_other_uid_validity(data: bytes, uid_validity: int) -> bool:
    """Does ``data`` start with a well-formed header of an index of another UIDVALIDITY?"""
    end = data.find(b"\n")
    fields = data[:end].decode("ascii", "replace").split() if end > 0 else []
    if len(fields) < 3 or fields[0] != _MAGIC or fields[1] != _VERSION:
        return False
    other = fields[2]
    return other[:1] == "V" and other[1:].isdigit() and int(other[1:]) != uid_validity


def _usable_header(data: bytes, uid_validity: int) -> dict | None:
    """The header of the file ``data`` if it is an index of this UIDVALIDITY whose snapshot is
    whole, else None."""
    end = data.find(b"\n")
    fields = data[:end].decode("ascii", "replace").split() if end > 0 else []
    if len(fields) < 2 or fields[0] != _MAGIC or fields[1] != _VERSION:
        return None
    values = {f[0]: f[1:] for f in fields[2:] if f}
    try:
        header = {key: int(values[key]) for key in "VHFNE"}
    except (KeyError, ValueError):
        return None
    token = values.get("G", "")
    if min(header.values()) < 0 or header["H"] < 1 or not token:
        return None
    if header["V"] != uid_validity or end + 1 + 16 * header["N"] + 12 * header["E"] > len(data):
        return None
    header["G"] = token
    return header


def _snapshot(
    uid_validity: int,
    highest: int,
    floor: int,
    token: str,
    state: Mapping[int, tuple[int, int]],
    expunged: Mapping[int, int],
) -> bytes:
    """The whole file: header and snapshot, no lines."""
    uids = sorted(state)
    arrays = [
        array(_U32, uids),
        array(_U64, (state[uid][0] for uid in uids)),
        array(_U32, (state[uid][1] for uid in uids)),
        array(_U32, expunged.keys()),
        array(_U64, expunged.values()),
    ]
    header = (
        f"{_MAGIC} {_VERSION} V{uid_validity} H{highest} F{floor} N{len(uids)} "
        f"E{len(expunged)} G{token}\n"
    )
    if sys.byteorder != "little":  # pragma: no cover
        for a in arrays:
            a.byteswap()
    return header.encode("ascii") + b"".join(a.tobytes() for a in arrays)


def _unpack(data: bytes, start: int, count: int, expunges: int) -> list[array]:
    """The five arrays of the snapshot at ``start`` (see ``_snapshot``)."""
    result = []
    offset = start
    view = memoryview(data)
    for code, length in ((_U32, count), (_U64, count), (_U32, count), (_U32, expunges)):
        a = array(code)
        a.frombytes(view[offset : offset + length * a.itemsize])
        offset += length * a.itemsize
        result.append(a)
    a = array(_U64)
    a.frombytes(view[offset : offset + expunges * 8])
    result.append(a)
    if sys.byteorder != "little":  # pragma: no cover
        for a in result:
            a.byteswap()
    return result


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
