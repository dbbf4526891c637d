"""One whole IMAP command (bytes, as ``framing`` delivers it) into a ``commands`` object.

``parse_command`` raises ``ParseError`` and nothing else, whatever the input; its ``reason`` is a
short text for the tagged BAD.  Choices where the RFCs leave room:

- 0 in a sequence set is BAD (``nz-number``), also in ``UID FETCH 0:*``, as Dovecot does;
- the length of a partial ``<origin.length>`` may be 0 (Dovecot allows it; RFC 3501 says
  ``nz-number``); both numbers are 32-bit;
- ``\\Recent`` in STORE or APPEND is BAD (RFC 3501 2.3.2: the client cannot alter it);
- QRESYNC's modseq and CHANGEDSINCE may be 0 (RFC 7162 says ``mod-sequence-value``, but 0
  harms nothing: everything changed since); VANISHED needs UID FETCH and CHANGEDSINCE
  (RFC 7162 3.2.6);
- FETCH macros (ALL, FAST, FULL) only stand alone, never inside a list (RFC 3501 grammar);
- mechanism, capability, option and item names are upper-cased.
"""

from __future__ import annotations

import functools
import re

from mailgw.imap.wire import commands as c
from mailgw.imap.wire.grammar import MAX_MODSEQ, ParseError, Reader
from mailgw.imap.wire.search import read_criteria

__all__ = ["ParseError", "parse_command"]

_LPAREN, _RPAREN, _QUOTE, _LBRACKET, _RBRACKET, _LT, _GT, _DOT, _TILDE = b'()"[]<>.~'
_DIGITS = frozenset(b"0123456789")


def parse_command(data: bytes, utf8_names: bool = False) -> c.Command:
    """The command ``data`` holds (its line end included), or ParseError; mailbox names are
    read as UTF-8 if ``utf8_names`` (a session that enabled IMAP4rev2), else as modified
    UTF-7."""
    reader = Reader(data, utf8_names)
    name = reader.head()
    tag = reader.tag
    if name == "UID":
        reader.sp("UID needs a command")
        name = reader.keyword("bad command name after UID")
        if name not in _SELECTED:
            reader.fail(f"UID {name[:24]} is not a command")
        command = _SELECTED[name](reader, tag, True)
    elif name in _SELECTED:
        command = _SELECTED[name](reader, tag, False)
    elif name in _PARSERS:
        command = _PARSERS[name](reader, tag)
    else:
        reader.fail(f"unknown command {name[:24]}")
    reader.finish(name)
    return command


# -- commands without arguments -------------------------------------------------------------


def _bare(cls):
    return lambda reader, tag: cls(tag)


# -- not authenticated and any state ------------------------------------------------------------


def _login(reader: Reader, tag: bytes) -> c.Login:
    reader.sp("LOGIN needs a user name")
    user = reader.astring("LOGIN needs a user name")
    reader.sp("LOGIN needs a password")
    return c.Login(tag, user=user, password=reader.astring("LOGIN needs a password"))


def _authenticate(reader: Reader, tag: bytes) -> c.Authenticate:
    reader.sp("AUTHENTICATE needs a mechanism")
    mechanism = reader.keyword("AUTHENTICATE needs a mechanism")
    initial = reader.atom("bad initial response") if reader.maybe_sp() else None
    return c.Authenticate(tag, mechanism=mechanism, initial=initial)


def _id(reader: Reader, tag: bytes) -> c.Id:
    reader.sp("ID needs a parameter list or NIL")
    if reader.peek() != _LPAREN:
        if reader.atom("ID needs a parameter list or NIL").upper() != b"NIL":
            reader.fail("ID needs a parameter list or NIL")
        return c.Id(tag, parameters=None)
    reader.pos += 1
    pairs = []
    reader.skip_spaces()
    while not reader.skip(_RPAREN):
        key = reader.string("ID field names are strings")
        reader.sp("ID field needs a value")
        value = reader.nstring("ID value must be a string or NIL")
        pairs.append((_text(key), None if value is None else _text(value)))
        reader.skip_spaces()
    return c.Id(tag, parameters=tuple(pairs))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _enable(reader: Reader, tag: bytes) -> c.Enable:
    names = []
    while reader.maybe_sp():
        names.append(reader.keyword("bad capability name"))
    if not names:
        reader.fail("ENABLE needs a capability")
    return c.Enable(tag, capabilities=tuple(names))


def _compress(reader: Reader, tag: bytes) -> c.Compress:
    reader.sp("COMPRESS needs a mechanism")
    return c.Compress(tag, mechanism=reader.keyword("COMPRESS needs a mechanism"))


# -- authenticated ----------------------------------------------------------------------------


def _mailbox_command(cls, command: str):
    def parse(reader: Reader, tag: bytes):
        reader.sp(f"{command} needs a mailbox name")
        return cls(tag, mailbox=reader.mailbox(f"{command} needs a mailbox name"))

    return parse


def _select(readonly: bool):
    command = "EXAMINE" if readonly else "SELECT"

    def parse(reader: Reader, tag: bytes) -> c.Select:
        reader.sp(f"{command} needs a mailbox name")
        mailbox = reader.mailbox(f"{command} needs a mailbox name")
        condstore, qresync = False, None
        if reader.maybe_sp():
            reader.expect(_LPAREN, f"{command} parameters must be a list")
            while True:
                param = reader.keyword(f"bad {command} parameter")
                if param == "CONDSTORE":
                    condstore = True
                elif param == "QRESYNC" and qresync is None:
                    reader.sp("QRESYNC needs parameters")
                    qresync = _qresync(reader)
                else:
                    reader.fail(f"unknown {command} parameter {param[:24]}")
                if reader.skip(_RPAREN):
                    break
                reader.sp(f"unterminated {command} parameters")
        return c.Select(
            tag, mailbox=mailbox, readonly=readonly, condstore=condstore, qresync=qresync
        )

    return parse


def _qresync(reader: Reader) -> c.QResync:
    """``(uidvalidity modseq [known-uids] [(known-seqs known-uids)])`` (RFC 7162 3.2.5)."""
    reader.expect(_LPAREN, "QRESYNC parameters must be a list")
    uid_validity = reader.nz_number("QRESYNC needs the UIDVALIDITY")
    reader.sp("QRESYNC needs a mod-sequence")
    modseq = reader.number("QRESYNC needs a mod-sequence", MAX_MODSEQ)
    known = match = None
    if reader.maybe_sp() and reader.peek() != _LPAREN:
        known = reader.sequence_set("bad QRESYNC known UIDs", saved=False)
        reader.maybe_sp()
    if reader.skip(_LPAREN):
        seqs = reader.sequence_set("bad QRESYNC sequence match", saved=False)
        reader.sp("QRESYNC sequence match needs UIDs")
        uids = reader.sequence_set("bad QRESYNC sequence match", saved=False)
        reader.expect(_RPAREN, "unterminated QRESYNC sequence match")
        match = (seqs, uids)
    reader.expect(_RPAREN, "unterminated QRESYNC parameters")
    return c.QResync(uid_validity, modseq, known_uids=known, sequence_match=match)


def _create(reader: Reader, tag: bytes) -> c.Create:
    reader.sp("CREATE needs a mailbox name")
    mailbox = reader.mailbox("CREATE needs a mailbox name")
    uses: tuple[str, ...] = ()
    if reader.maybe_sp():
        reader.expect(_LPAREN, "CREATE parameters must be a list")
        if reader.keyword("bad CREATE parameter") != "USE":
            reader.fail("unknown CREATE parameter")
        reader.sp("USE needs a list of special-use flags")
        uses = reader.flag_list("USE needs a list of special-use flags")
        reader.expect(_RPAREN, "unterminated CREATE parameters")
    return c.Create(tag, mailbox=mailbox, special_use=uses)


def _rename(reader: Reader, tag: bytes) -> c.Rename:
    reader.sp("RENAME needs two mailbox names")
    old = reader.mailbox("RENAME needs two mailbox names")
    reader.sp("RENAME needs two mailbox names")
    return c.Rename(tag, old=old, new=reader.mailbox("RENAME needs two mailbox names"))


_SELECTION = frozenset(("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"))
_RETURNS = frozenset(("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"))
_STATUS_ITEMS = frozenset(
    ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "DELETED")
)


def _list(reader: Reader, tag: bytes) -> c.List:
    reader.sp("LIST needs a reference and a mailbox pattern")
    selection: list[str] = []
    extended = reader.peek() == _LPAREN
    if extended:
        selection = reader.list_of(reader.keyword, "bad LIST selection option", empty=True)
        for option in selection:
            if option not in _SELECTION:
                reader.fail(f"unknown LIST selection option {option[:24]}")
        if "RECURSIVEMATCH" in selection and set(selection) <= {"RECURSIVEMATCH", "REMOTE"}:
            reader.fail("RECURSIVEMATCH needs another selection option than REMOTE")
        reader.sp("LIST needs a reference and a mailbox pattern")
    reference = reader.mailbox("LIST needs a reference and a mailbox pattern")
    reader.sp("LIST needs a mailbox pattern")
    if reader.peek() == _LPAREN:
        extended = True
        patterns = reader.list_of(reader.list_mailbox, "LIST needs a mailbox pattern")
    else:
        patterns = [reader.list_mailbox("LIST needs a mailbox pattern")]
    returns: list[str] = []
    status = None
    if reader.maybe_sp():
        extended = True
        if reader.keyword("LIST options must start with RETURN") != "RETURN":
            reader.fail("LIST options must start with RETURN")
        reader.sp("RETURN needs a list")
        reader.expect(_LPAREN, "RETURN needs a list")
        reader.skip_spaces()
        while not reader.skip(_RPAREN):
            option = reader.keyword("bad LIST return option")
            if option == "STATUS" and status is None:
                reader.sp("STATUS needs a list of items")
                status = _status_items(reader)
            elif option in _RETURNS:
                returns.append(option)
            else:
                reader.fail(f"unknown LIST return option {option[:24]}")
            reader.skip_spaces()
    return c.List(
        tag,
        reference=reference,
        patterns=tuple(patterns),
        selection=tuple(selection),
        returns=tuple(returns),
        status=status,
        extended=extended,
    )


def _lsub(reader: Reader, tag: bytes) -> c.Lsub:
    reader.sp("LSUB needs a reference and a mailbox pattern")
    reference = reader.mailbox("LSUB needs a reference and a mailbox pattern")
    reader.sp("LSUB needs a mailbox pattern")
    return c.Lsub(tag, reference=reference, pattern=reader.list_mailbox("LSUB needs a pattern"))


def _status_items(reader: Reader) -> tuple[str, ...]:
    items = reader.list_of(reader.keyword, "STATUS needs a list of items")
    for item in items:
        if item not in _STATUS_ITEMS:
            reader.fail(f"unknown STATUS item {item[:24]}")
    return tuple(items)


def _status(reader: Reader, tag: bytes) -> c.Status:
    reader.sp("STATUS needs a mailbox name")
    mailbox = reader.mailbox("STATUS needs a mailbox name")
    reader.sp("STATUS needs a list of items")
    return c.Status(tag, mailbox=mailbox, items=_status_items(reader))


def _append(reader: Reader, tag: bytes) -> c.Append:
    reader.sp("APPEND needs a mailbox name")
    mailbox = reader.mailbox("APPEND needs a mailbox name")
    messages = []
    reader.sp("APPEND needs a message literal")
    while True:
        flags: tuple[str, ...] = ()
        date = None
        if reader.peek() == _LPAREN:
            flags = reader.flag_list("bad APPEND flags")
            reader.sp("APPEND needs a message literal")
        if reader.peek() == _QUOTE:
            date = reader.date_time("bad APPEND date-time")
            reader.sp("APPEND needs a message literal")
        binary = reader.peek() == _TILDE
        data = reader.literal("APPEND needs a message literal", binary=True)
        messages.append(c.AppendMessage(flags=flags, internal_date=date, data=data, binary=binary))
        if not reader.maybe_sp():
            return c.Append(tag, mailbox=mailbox, messages=tuple(messages))


# -- selected ---------------------------------------------------------------------------------


def _expunge(reader: Reader, tag: bytes, uid: bool) -> c.Expunge:
    if not uid:
        return c.Expunge(tag)
    reader.sp("UID EXPUNGE needs a sequence set")
    return c.Expunge(tag, uids=reader.sequence_set("UID EXPUNGE needs a sequence set"))


def _copy(move: bool):
    command = "MOVE" if move else "COPY"

    def parse(reader: Reader, tag: bytes, uid: bool) -> c.Copy:
        reader.sp(f"{command} needs a sequence set")
        messages = reader.sequence_set(f"{command} needs a sequence set")
        reader.sp(f"{command} needs a mailbox name")
        mailbox = reader.mailbox(f"{command} needs a mailbox name")
        return c.Copy(tag, messages=messages, mailbox=mailbox, uid=uid, move=move)

    return parse


_STORE_ITEMS = {
    "FLAGS": ("set", False),
    "FLAGS.SILENT": ("set", True),
    "+FLAGS": ("add", False),
    "+FLAGS.SILENT": ("add", True),
    "-FLAGS": ("remove", False),
    "-FLAGS.SILENT": ("remove", True),
}


def _store(reader: Reader, tag: bytes, uid: bool) -> c.Store:
    reader.sp("STORE needs a sequence set")
    messages = reader.sequence_set("STORE needs a sequence set")
    reader.sp("STORE needs a data item")
    unchanged_since = None
    if reader.skip(_LPAREN):
        if reader.keyword("bad STORE modifier") != "UNCHANGEDSINCE":
            reader.fail("unknown STORE modifier")
        reader.sp("UNCHANGEDSINCE needs a mod-sequence")
        unchanged_since = reader.number("UNCHANGEDSINCE needs a mod-sequence", MAX_MODSEQ)
        reader.expect(_RPAREN, "unterminated STORE modifiers")
        reader.sp("STORE needs a data item")
    item = reader.keyword("STORE needs FLAGS, +FLAGS or -FLAGS")
    if item not in _STORE_ITEMS:
        reader.fail(f"unknown STORE data item {item[:24]}")
    mode, silent = _STORE_ITEMS[item]
    reader.sp(f"{item} needs flags")
    if reader.peek() == _LPAREN:
        flags = reader.flag_list(f"{item} needs flags")
    else:
        flags_list = [reader.flag(f"{item} needs flags")]
        while reader.maybe_sp():
            flags_list.append(reader.flag("bad flag"))
        flags = tuple(flags_list)
    return c.Store(
        tag,
        messages=messages,
        mode=mode,
        silent=silent,
        flags=flags,
        uid=uid,
        unchanged_since=unchanged_since,
    )


def _search_returns(reader: Reader) -> tuple[str, ...] | None:
    """ESEARCH's ``RETURN (...)`` if it comes next (RFC 4731, 5182)."""
    start = reader.pos
    if reader.data[start : start + 7].upper() != b"RETURN ":
        return None
    reader.pos += 7
    reader.skip_spaces()
    options = reader.list_of(reader.keyword, "RETURN needs a list", empty=True)
    for option in options:
        if option not in ("MIN", "MAX", "ALL", "COUNT", "SAVE"):
            reader.fail(f"unknown SEARCH return option {option[:24]}")
    reader.sp("SEARCH needs search criteria")
    return tuple(options) or ("ALL",)


def _charset(reader: Reader, command: str) -> str:
    raw = reader.astring(f"{command} needs a charset")
    if not raw.isascii():
        reader.fail("bad charset name")
    return raw.decode("ascii")


def _search(reader: Reader, tag: bytes, uid: bool) -> c.Search:
    reader.sp("SEARCH needs search criteria")
    returns = _search_returns(reader)
    charset = None
    if reader.data[reader.pos : reader.pos + 8].upper() == b"CHARSET ":
        reader.pos += 8
        reader.skip_spaces()
        charset = _charset(reader, "SEARCH")
        reader.sp("SEARCH needs search criteria")
    criteria = read_criteria(reader, charset)
    return c.Search(tag, criteria=criteria, charset=charset, uid=uid, returns=returns)


_SORT_KEYS = frozenset(("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"))


def _sort(reader: Reader, tag: bytes, uid: bool) -> c.Sort:
    reader.sp("SORT needs sort keys")
    words = reader.list_of(reader.keyword, "SORT needs sort keys")
    keys, reverse = [], False
    for word in words:
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in _SORT_KEYS:
            reader.fail(f"unknown SORT key {word[:24]}")
        keys.append((reverse, word))
        reverse = False
    if reverse:
        reader.fail("REVERSE needs a sort key after it")
    reader.sp("SORT needs a charset")
    charset = _charset(reader, "SORT")
    reader.sp("SORT needs search criteria")
    criteria = read_criteria(reader, charset)
    return c.Sort(tag, keys=tuple(keys), charset=charset, criteria=criteria, uid=uid)


def _thread(reader: Reader, tag: bytes, uid: bool) -> c.Thread:
    reader.sp("THREAD needs an algorithm")
    algorithm = reader.keyword("THREAD needs an algorithm")
    if algorithm not in ("REFERENCES", "ORDEREDSUBJECT"):
        reader.fail(f"unknown THREAD algorithm {algorithm[:24]}")
    reader.sp("THREAD needs a charset")
    charset = _charset(reader, "THREAD")
    reader.sp("THREAD needs search criteria")
    criteria = read_criteria(reader, charset)
    return c.Thread(tag, algorithm=algorithm, charset=charset, criteria=criteria, uid=uid)


_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_TEXT = re.compile(rb"[A-Za-z.]+")
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE = {
    name: c.FetchAttribute(name)
    for name in (
        "UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE",
        "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ",
    )
}  # fmt: skip
#: Items taking a section: name -> (attribute name, peek).
_SECTIONED = {
    "BODY": ("BODY", False),
    "BODY.PEEK": ("BODY", True),
    "BINARY": ("BINARY", False),
    "BINARY.PEEK": ("BINARY", True),
    "BINARY.SIZE": ("BINARY.SIZE", False),
}
_UID = _SIMPLE["UID"]


def _fetch(reader: Reader, tag: bytes, uid: bool) -> c.Fetch:
    reader.sp("FETCH needs a sequence set")
    messages = reader.sequence_set("FETCH needs a sequence set")
    rest = reader.data[reader.pos : reader.end]
    if len(rest) <= _CACHED_ITEMS and b"{" not in rest:
        try:
            attributes, changed_since, vanished = _cached_fetch_items(rest)
        except ParseError as error:
            reader.fail(error.reason)
        reader.pos = reader.end
    else:
        attributes, changed_since, vanished = _fetch_items(reader)
    if vanished and not (uid and changed_since is not None):
        reader.fail("VANISHED needs UID FETCH and CHANGEDSINCE")
    if uid and _UID not in attributes:
        attributes = (_UID, *attributes)
    return c.Fetch(tag, messages, attributes, uid, changed_since, vanished)


#: Longest FETCH item text whose parse is cached (clients repeat the same few).
_CACHED_ITEMS = 512


@functools.lru_cache(maxsize=256)
def _cached_fetch_items(rest: bytes) -> tuple[tuple[c.FetchAttribute, ...], int | None, bool]:
    """``_fetch_items`` of a command's text after its sequence set, remembered."""
    reader = Reader(rest)
    found = _fetch_items(reader)
    reader.finish("FETCH")
    return found


def _fetch_items(reader: Reader) -> tuple[tuple[c.FetchAttribute, ...], int | None, bool]:
    """`` SP items [SP modifiers]``: the attributes, CHANGEDSINCE and VANISHED."""
    reader.sp("FETCH needs data items")
    if reader.skip(_LPAREN):
        attributes = []
        reader.skip_spaces()
        while not reader.skip(_RPAREN):
            if not reader.more():
                reader.fail("unterminated FETCH item list")
            attributes.append(_fetch_attribute(reader))
            reader.skip_spaces()
        if not attributes:
            reader.fail("FETCH needs data items")
    else:
        start = reader.pos
        macro = _MACROS.get(reader.match(_FETCH_NAME, "FETCH needs data items").upper().decode())
        if macro is None:
            reader.pos = start
            attributes = [_fetch_attribute(reader)]
        else:
            attributes = [_SIMPLE[name] for name in macro]
    changed_since, vanished = _fetch_modifiers(reader) if reader.maybe_sp() else (None, False)
    return tuple(attributes), changed_since, vanished


def _fetch_modifiers(reader: Reader) -> tuple[int | None, bool]:
    """``(CHANGEDSINCE n [VANISHED])`` in any order (RFC 7162 3.1.4, 3.2.6)."""
    reader.expect(_LPAREN, "FETCH modifiers must be a list")
    changed_since, vanished = None, False
    while True:
        modifier = reader.keyword("bad FETCH modifier")
        if modifier == "CHANGEDSINCE" and changed_since is None:
            reader.sp("CHANGEDSINCE needs a mod-sequence")
            changed_since = reader.number("CHANGEDSINCE needs a mod-sequence", MAX_MODSEQ)
        elif modifier == "VANISHED" and not vanished:
            vanished = True
        else:
            reader.fail(f"unknown FETCH modifier {modifier[:24]}")
        if reader.skip(_RPAREN):
            return changed_since, vanished
        reader.sp("unterminated FETCH modifiers")


def _fetch_attribute(reader: Reader) -> c.FetchAttribute:
    name = reader.match(_FETCH_NAME, "bad FETCH item").upper().decode()
    if reader.peek() != _LBRACKET:
        attribute = _SIMPLE.get(name)
        if attribute is not None:
            return attribute
        if name in _MACROS:
            reader.fail(f"{name} cannot be inside a list")
        if name in _SECTIONED:
            reader.fail(f"{name} needs a section")
        reader.fail(f"unknown FETCH item {name[:24]}")
    if name not in _SECTIONED:
        reader.fail(f"{name[:24]} takes no section")
    kind, peek = _SECTIONED[name]
    reader.pos += 1
    section = _section(reader, binary=kind != "BODY")
    partial = None
    if reader.skip(_LT):
        if kind == "BINARY.SIZE":
            reader.fail("BINARY.SIZE takes no partial")
        origin = reader.number("bad partial (expected <origin.length>)")
        reader.expect(_DOT, "bad partial (expected <origin.length>)")
        length = reader.number("bad partial (expected <origin.length>)")
        reader.expect(_GT, "bad partial (expected <origin.length>)")
        partial = (origin, length)
    return c.FetchAttribute(kind, section=section, peek=peek, partial=partial)


def _section(reader: Reader, binary: bool) -> c.Section:
    """The inside of ``[...]`` and its ``]`` (RFC 3501 ``section``, RFC 3516
    ``section-binary``)."""
    part = []
    while reader.peek() in _DIGITS:
        part.append(reader.nz_number("bad section part number"))
        if not reader.skip(_DOT):
            break
        if reader.peek() not in _DIGITS:
            if binary or reader.peek() == _RBRACKET:
                reader.fail("bad section part number")
            break
    if reader.skip(_RBRACKET):
        return c.Section(tuple(part))
    if binary:
        reader.fail("a BINARY section holds part numbers only")
    if part and reader.data[reader.pos - 1] != _DOT:
        reader.fail("bad section")
    text = reader.match(_SECTION_TEXT, "bad section").upper().decode()
    fields: tuple[str, ...] = ()
    if text == "MIME" and not part:
        reader.fail("MIME needs a part number")
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        reader.sp(f"{text} needs a list of header names")
        fields = tuple(reader.list_of(_field_name(reader), f"{text} needs a list of header names"))
    elif text not in ("HEADER", "TEXT", "MIME"):
        reader.fail(f"unknown section {text[:24]}")
    reader.expect(_RBRACKET, "unterminated section")
    return c.Section(tuple(part), text, fields)


def _field_name(reader: Reader):
    def read(reason: str) -> str:
        raw = reader.astring(reason)
        if not raw.isascii():
            reader.fail("header names are ASCII")
        return raw.decode("ascii")

    return read


_PARSERS = {
    "CAPABILITY": _bare(c.Capability),
    "NOOP": _bare(c.Noop),
    "LOGOUT": _bare(c.Logout),
    "STARTTLS": _bare(c.StartTLS),
    "NAMESPACE": _bare(c.Namespace),
    "IDLE": _bare(c.Idle),
    "CHECK": _bare(c.Check),
    "CLOSE": _bare(c.Close),
    "UNSELECT": _bare(c.Unselect),
    "ID": _id,
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ENABLE": _enable,
    "COMPRESS": _compress,
    "SELECT": _select(readonly=False),
    "EXAMINE": _select(readonly=True),
    "CREATE": _create,
    "DELETE": _mailbox_command(c.Delete, "DELETE"),
    "RENAME": _rename,
    "SUBSCRIBE": _mailbox_command(c.Subscribe, "SUBSCRIBE"),
    "UNSUBSCRIBE": _mailbox_command(c.Unsubscribe, "UNSUBSCRIBE"),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
}
#: The commands that UID may prefix: they take (reader, tag, uid).
_SELECTED = {
    "EXPUNGE": _expunge,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy(move=False),
    "MOVE": _copy(move=True),
    "SEARCH": _search,
    "SORT": _sort,
    "THREAD": _thread,
}
