"""Typed IMAP commands: what the parser produces and the session dispatches on.

Each class is one command (or one family: EXAMINE is ``Select(readonly=True)``, ``UID FETCH`` is
``Fetch(uid=True)``).  Values are decoded once here: mailbox names are ``str`` (modified UTF-7
already decoded), flags are ``str`` in the client's spelling, message data and passwords
``bytes``.  Nothing here reads the store; a command's meaning in the selected mailbox (which
numbers ``*`` and ``$`` stand for) is the session's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

#: ``None`` in a sequence range stands for ``*`` (the largest number in use).
Number = int | None


@dataclass(frozen=True)
class SequenceSet:
    """A sequence set (RFC 3501 ``sequence-set``) or ``$`` (RFC 5182, the saved search result).

    ``ranges`` keeps the client's order and each range as written (``5:3`` stays ``(5, 3)``);
    ``None`` is ``*``.  ``saved`` is True for ``$``, and then ``ranges`` is empty."""

    ranges: tuple[tuple[Number, Number], ...] = ()
    saved: bool = False

    def resolved(self, largest: int) -> list[tuple[int, int]]:
        """The ranges with ``*`` replaced by ``largest``, each as (low, high), low <= high."""
        out = []
        for low, high in self.ranges:
            low = largest if low is None else low
            high = largest if high is None else high
            out.append((min(low, high), max(low, high)))
        return out


@dataclass(frozen=True)
class Section:
    """The ``[...]`` of BODY[...] / BINARY[...]: a part path and an optional text specifier.

    ``part`` is ``(1, 2)`` for ``1.2``, ``()`` for the whole message.  ``text`` is None (the whole
    part), ``"HEADER"``, ``"HEADER.FIELDS"``, ``"HEADER.FIELDS.NOT"``, ``"TEXT"`` or ``"MIME"``.
    ``fields`` holds the header names of HEADER.FIELDS[.NOT], as the client spelled them."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchAttribute:
    """One FETCH item after macro expansion (ALL, FAST, FULL are expanded by the parser).

    ``name`` is one of: ``UID``, ``FLAGS``, ``INTERNALDATE``, ``RFC822.SIZE``, ``ENVELOPE``,
    ``BODY`` (the non-extensible BODYSTRUCTURE when ``section`` is None), ``BODYSTRUCTURE``,
    ``RFC822``, ``RFC822.HEADER``, ``RFC822.TEXT``, ``BINARY``, ``BINARY.SIZE``, ``MODSEQ``.
    ``BODY[...]``/``BODY.PEEK[...]`` is ``name="BODY"`` with a ``section`` (``peek`` for .PEEK),
    likewise ``BINARY[...]``/``BINARY.PEEK[...]``.  ``partial`` is ``<origin.length>``."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None


@dataclass(frozen=True)
class Command:
    """One command as the client sent it.  ``tag`` is the client's tag (bytes, as sent)."""

    tag: bytes
    #: The command's name as the state tables and log lines know it, e.g. b"FETCH".
    name: ClassVar[bytes] = b""


# -- any state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Capability(Command):
    name: ClassVar[bytes] = b"CAPABILITY"


@dataclass(frozen=True)
class Noop(Command):
    name: ClassVar[bytes] = b"NOOP"


@dataclass(frozen=True)
class Logout(Command):
    name: ClassVar[bytes] = b"LOGOUT"


@dataclass(frozen=True)
class Id(Command):
    """RFC 2971.  ``parameters`` is None for ``ID NIL``; values may be None (NIL)."""

    name: ClassVar[bytes] = b"ID"
    parameters: tuple[tuple[str, str | None], ...] | None = None


# -- not authenticated ---------------------------------------------------------------------


@dataclass(frozen=True)
class StartTLS(Command):
    name: ClassVar[bytes] = b"STARTTLS"


@dataclass(frozen=True)
class Login(Command):
    name: ClassVar[bytes] = b"LOGIN"
    user: bytes = b""
    password: bytes = b""


@dataclass(frozen=True)
class Authenticate(Command):
    """``initial`` is the SASL-IR initial response still base64-encoded (``=`` is b"="), or
    None when the client sent none."""

    name: ClassVar[bytes] = b"AUTHENTICATE"
    mechanism: str = ""
    initial: bytes | None = None


# -- authenticated ------------------------------------------------------------------------


@dataclass(frozen=True)
class Enable(Command):
    """RFC 5161; capability names upper-cased."""

    name: ClassVar[bytes] = b"ENABLE"
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class QResync:
    """The ``(QRESYNC (uidvalidity modseq [known-uids [seq-match]]))`` of SELECT (RFC 7162)."""

    uid_validity: int
    modseq: int
    known_uids: SequenceSet | None = None
    #: (known sequence numbers, the UIDs they had), both as sequence sets.
    sequence_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True)
class Select(Command):
    """SELECT, or EXAMINE when ``readonly``; ``condstore`` for the (CONDSTORE) parameter."""

    name: ClassVar[bytes] = b"SELECT"
    mailbox: str = ""
    readonly: bool = False
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True)
class Create(Command):
    """``special_use``: the ``(USE (\\Sent ...))`` of RFC 6154 CREATE, if given."""

    name: ClassVar[bytes] = b"CREATE"
    mailbox: str = ""
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delete(Command):
    name: ClassVar[bytes] = b"DELETE"
    mailbox: str = ""


@dataclass(frozen=True)
class Rename(Command):
    name: ClassVar[bytes] = b"RENAME"
    old: str = ""
    new: str = ""


@dataclass(frozen=True)
class Subscribe(Command):
    name: ClassVar[bytes] = b"SUBSCRIBE"
    mailbox: str = ""


@dataclass(frozen=True)
class Unsubscribe(Command):
    name: ClassVar[bytes] = b"UNSUBSCRIBE"
    mailbox: str = ""


@dataclass(frozen=True)
class List(Command):
    """LIST, plain or extended (RFC 5258, 5819, 6154).

    ``patterns`` are decoded mailbox patterns (``*``/``%`` kept); ``selection`` the upper-cased
    selection options (SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE); ``returns`` the
    upper-cased return options other than STATUS (SUBSCRIBED, CHILDREN, SPECIAL-USE);
    ``status`` the items of ``RETURN (STATUS (...))``, or None when not asked.  ``extended`` is
    True when any of the RFC 5258 syntax was used (then LIST answers the extended way)."""

    name: ClassVar[bytes] = b"LIST"
    reference: str = ""
    patterns: tuple[str, ...] = ()
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status: tuple[str, ...] | None = None
    extended: bool = False


@dataclass(frozen=True)
class Lsub(Command):
    name: ClassVar[bytes] = b"LSUB"
    reference: str = ""
    pattern: str = ""


@dataclass(frozen=True)
class Namespace(Command):
    name: ClassVar[bytes] = b"NAMESPACE"


@dataclass(frozen=True)
class Status(Command):
    """``items`` upper-cased: MESSAGES, RECENT, UIDNEXT, UIDVALIDITY, UNSEEN, SIZE,
    HIGHESTMODSEQ, DELETED."""

    name: ClassVar[bytes] = b"STATUS"
    mailbox: str = ""
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class AppendMessage:
    """One message of an APPEND: its flags, INTERNALDATE (POSIX timestamp) and octets;
    ``binary`` when they came as literal8 (``~{n}``, RFC 3516): how they were framed, not
    compared with ``==``."""

    flags: tuple[str, ...] = ()
    internal_date: float | None = None
    data: bytes = b""
    binary: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Append(Command):
    """APPEND, with MULTIAPPEND's several messages (RFC 3502) in order."""

    name: ClassVar[bytes] = b"APPEND"
    mailbox: str = ""
    messages: tuple[AppendMessage, ...] = ()


@dataclass(frozen=True)
class Idle(Command):
    name: ClassVar[bytes] = b"IDLE"


@dataclass(frozen=True)
class Compress(Command):
    """RFC 4978; ``mechanism`` upper-cased (only DEFLATE exists)."""

    name: ClassVar[bytes] = b"COMPRESS"
    mechanism: str = ""


# -- selected -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Check(Command):
    name: ClassVar[bytes] = b"CHECK"


@dataclass(frozen=True)
class Close(Command):
    name: ClassVar[bytes] = b"CLOSE"


@dataclass(frozen=True)
class Unselect(Command):
    name: ClassVar[bytes] = b"UNSELECT"


@dataclass(frozen=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE (RFC 4315) when ``uids`` is given."""

    name: ClassVar[bytes] = b"EXPUNGE"
    uids: SequenceSet | None = None


@dataclass(frozen=True)
class Fetch(Command):
    """FETCH / UID FETCH.  With ``uid`` the parser adds a ``UID`` attribute if missing.

    ``changed_since`` and ``vanished`` are the RFC 7162 modifiers."""

    name: ClassVar[bytes] = b"FETCH"
    messages: SequenceSet = field(default_factory=SequenceSet)
    attributes: tuple[FetchAttribute, ...] = ()
    uid: bool = False
    changed_since: int | None = None
    vanished: bool = False


@dataclass(frozen=True)
class Store(Command):
    """STORE / UID STORE.  ``mode`` is ``"set"``, ``"add"`` or ``"remove"`` (FLAGS, +FLAGS,
    -FLAGS); ``silent`` for .SILENT; ``unchanged_since`` the RFC 7162 modifier."""

    name: ClassVar[bytes] = b"STORE"
    messages: SequenceSet = field(default_factory=SequenceSet)
    mode: str = "set"
    silent: bool = False
    flags: tuple[str, ...] = ()
    uid: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True)
class Copy(Command):
    """COPY / UID COPY, and MOVE / UID MOVE (RFC 6851) when ``move``."""

    name: ClassVar[bytes] = b"COPY"
    messages: SequenceSet = field(default_factory=SequenceSet)
    mailbox: str = ""
    uid: bool = False
    move: bool = False


@dataclass(frozen=True)
class Search(Command):
    """SEARCH / UID SEARCH.

    ``criteria`` is the tree ``mailgw.imap.search`` evaluates (``("AND", [...])`` of leaf
    tuples); ``returns`` the upper-cased ESEARCH return options (RFC 4731: MIN, MAX, ALL, COUNT,
    and SAVE of RFC 5182), or None for a plain SEARCH (``RETURN ()`` is ``("ALL",)``)."""

    name: ClassVar[bytes] = b"SEARCH"
    criteria: tuple = ("AND", [])
    charset: str | None = None
    uid: bool = False
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Sort(Command):
    """RFC 5256 SORT: ``keys`` are (reverse, key) with key upper-cased (ARRIVAL, CC, DATE,
    FROM, SIZE, SUBJECT, TO)."""

    name: ClassVar[bytes] = b"SORT"
    keys: tuple[tuple[bool, str], ...] = ()
    charset: str = "UTF-8"
    criteria: tuple = ("AND", [])
    uid: bool = False


@dataclass(frozen=True)
class Thread(Command):
    """RFC 5256 THREAD: ``algorithm`` upper-cased (REFERENCES or ORDEREDSUBJECT)."""

    name: ClassVar[bytes] = b"THREAD"
    algorithm: str = "REFERENCES"
    charset: str = "UTF-8"
    criteria: tuple = ("AND", [])
    uid: bool = False
