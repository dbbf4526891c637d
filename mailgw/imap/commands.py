"""Selected-state and extension commands for ``IMAP4Server`` that Twisted lacks or gets wrong.

A mixin.  Replaces Twisted's COPY (``BAD Server error`` for a missing mailbox, no COPYUID),
SEARCH (headers read on the reactor thread), STORE (keywords dropped, store errors as BAD),
UID (only COPY/FETCH/STORE/SEARCH), NAMESPACE (shared namespaces listed twice), IDLE (no
changes pushed), LIST/LSUB and SUBSCRIBE (synchronous account calls), and adds MOVE (RFC 6851),
UID EXPUNGE (RFC 4315) and ID (RFC 2971).  Sequence numbers beyond the mailbox get ``BAD``.
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.mail import imap4

import mailgw
from mailgw.imap.account import NoSuchMailbox, StoreFailed
from mailgw.imap.folders import store_failed
from mailgw.imap.search import Candidate, SearchSyntaxError, evaluate, parse_criteria, tokenize

_log = Logger()

_Server = imap4.IMAP4Server

#: Commands that may follow UID.
UID_COMMANDS = frozenset({b"COPY", b"MOVE", b"FETCH", b"STORE", b"SEARCH", b"EXPUNGE"})
#: Charsets SEARCH accepts.
CHARSETS = frozenset({b"US-ASCII", b"UTF-8"})


def uid_set(uids: list) -> bytes:
    """A compact IMAP sequence set for ascending-order-insensitive ``uids`` (e.g. 1:3,7)."""
    ranges: list[list[int]] = []
    for uid in uids:
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return b",".join(b"%d" % a if a == b else b"%d:%d" % (a, b) for a, b in ranges)


def _mailbox_name(raw: bytes) -> str:
    return imap4._parseMbox(raw)


class SelectedCommands:
    """COPY, MOVE, SEARCH, STORE, EXPUNGE, UID, IDLE, ID, NAMESPACE, LIST/LSUB, (UN)SUBSCRIBE."""

    def _out_of_range(self, tag, messages, uid) -> bool:
        if not uid and self.mbox.out_of_range(messages):
            self.sendBadResponse(tag, b"Message sequence number out of range")
            return True
        return False

    def _failed(self, tag, name: bytes):
        def failed(failure):
            if failure.check(NoSuchMailbox):
                self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            elif failure.check(StoreFailed):
                self.sendNegativeResponse(tag, store_failed(failure.value, name))
            elif failure.check(imap4.MailboxException):
                message = str(failure.value).encode("ascii", "replace")
                self.sendNegativeResponse(tag, message or name + b" failed")
            else:
                _log.failure("{name} failed", failure, name=name)
                self.sendNegativeResponse(tag, b"[SERVERBUG] " + name + b" failed")

        return failed

    # -- COPY and MOVE ----------------------------------------------------------------------

    def do_COPY(self, tag, messages, mailbox, uid=0, move=False):
        """COPY (or MOVE) messages to another folder; answers with COPYUID (RFC 4315)."""
        name = b"MOVE" if move else b"COPY"
        if self._out_of_range(tag, messages, uid):
            return
        if move and not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        mbox = self.mbox
        sources = [u for _, u in mbox.resolve(messages, uid)]

        def copy(target):
            return mbox.copy_to(sources, target).addCallback(lambda copied: (target, copied))

        def copied(result):
            target, pairs = result
            code = b""
            if pairs:
                code = b"[COPYUID %d %s %s] " % (
                    target.uid_validity,
                    uid_set([s for s, _ in pairs]),
                    uid_set([d for _, d in pairs]),
                )
            if not move:
                self.sendPositiveResponse(tag, code + b"COPY completed")
                return None
            if code:
                self.sendPositiveResponse(None, code + b"Moved")
            d = mbox.expunge([s for s, _ in pairs], deleted_only=False)
            return d.addCallback(expunged)

        def expunged(numbers):
            for number in numbers:
                self.sendUntaggedResponse(b"%d EXPUNGE" % number)
            self.sendPositiveResponse(tag, b"MOVE completed")

        d = self.account.target(_mailbox_name(mailbox)).addCallback(copy)
        d.addCallback(copied).addErrback(self._failed(tag, name))

    select_COPY = (do_COPY, _Server.arg_seqset, _Server.arg_finalastring)

    def do_MOVE(self, tag, messages, mailbox, uid=0):
        """MOVE (RFC 6851): COPY, then expunge the originals."""
        self.do_COPY(tag, messages, mailbox, uid=uid, move=True)

    select_MOVE = (do_MOVE, _Server.arg_seqset, _Server.arg_finalastring)

    # -- EXPUNGE and UID ------------------------------------------------------------------

    def _expunge(self, tag, uids=None) -> None:
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return

        def expunged(numbers):
            for number in numbers:
                self.sendUntaggedResponse(b"%d EXPUNGE" % number)
            self.sendPositiveResponse(tag, b"EXPUNGE completed")

        d = maybeDeferred(self.mbox.expunge, uids)
        d.addCallback(expunged).addErrback(self._failed(tag, b"EXPUNGE"))

    def do_EXPUNGE(self, tag):
        """EXPUNGE every message flagged \\Deleted."""
        self._expunge(tag)

    select_EXPUNGE = (do_EXPUNGE,)

    def do_UID(self, tag, command, line):
        """UID with COPY, MOVE, FETCH, STORE, SEARCH and EXPUNGE."""
        command = command.upper()
        if command not in UID_COMMANDS:
            raise imap4.IllegalClientResponse("UID does not go with " + repr(command))
        if command == b"EXPUNGE":
            messages, rest = self.arg_seqset(line or b"")
            if rest:
                raise imap4.IllegalClientResponse("UID EXPUNGE takes one UID set")
            self._command = (command, True)
            self._expunge(tag, [u for _, u in self.mbox.resolve(messages, True)])
            return
        self.dispatchCommand(tag, command, line, uid=1)

    select_UID = (do_UID, _Server.arg_atom, _Server.arg_line)

    # -- STORE ----------------------------------------------------------------------------

    def do_STORE(self, tag, messages, mode, flags, uid=0):
        """STORE [+-]FLAGS[.SILENT]; keywords are kept; NO on a read-only mailbox."""
        mode = mode.upper()
        if mode.lstrip(b"+-") not in (b"FLAGS", b"FLAGS.SILENT"):
            self.sendBadResponse(tag, b"STORE takes FLAGS, +FLAGS or -FLAGS")
            return
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        if self._out_of_range(tag, messages, uid):
            return
        silent = mode.endswith(b".SILENT")
        how = 1 if mode[:1] == b"+" else -1 if mode[:1] == b"-" else 0
        names = [f.decode("ascii", "replace") for f in flags]
        mbox = self.mbox
        before = set(mbox.getFlags())

        def stored(result):
            after = mbox.getFlags()
            if set(after) != before:
                self.sendUntaggedResponse(b"FLAGS (" + " ".join(after).encode("ascii") + b")")
            for seq, new in sorted(result.items()):
                if silent:
                    continue
                uid_part = b" UID %d" % mbox.getUID(seq) if uid else b""
                line = " ".join(new).encode("ascii")
                self.sendUntaggedResponse(b"%d FETCH (FLAGS (%s)%s)" % (seq, line, uid_part))
            self.sendPositiveResponse(tag, b"STORE completed")

        d = maybeDeferred(mbox.store, messages, names, how, uid)
        d.addCallback(stored).addErrback(self._failed(tag, b"STORE"))

    select_STORE = (do_STORE, _Server.arg_seqset, _Server.arg_atom, _Server.arg_flaglist)

    # -- SEARCH ---------------------------------------------------------------------------

    def do_SEARCH(self, tag, line, uid=0):
        """SEARCH, evaluated in a thread over snapshots of the session's view."""
        try:
            tokens = tokenize(line)
            if isinstance(tokens[0], bytes) and tokens[0].upper() == b"CHARSET":
                if len(tokens) < 3:
                    raise SearchSyntaxError("CHARSET needs a name and criteria")
                charset = tokens[1] if isinstance(tokens[1], bytes) else tokens[1].encode()
                if charset.upper() not in CHARSETS:
                    self.sendNegativeResponse(tag, b"[BADCHARSET (US-ASCII UTF-8)] Unknown")
                    return
                tokens = tokens[2:]
            tree = parse_criteria(tokens)
        except SearchSyntaxError as error:
            self.sendBadResponse(tag, str(error).encode("ascii", "replace"))
            return
        candidates = [Candidate(*c) for c in self.mbox.candidates()]

        def found(numbers):
            self.sendUntaggedResponse(b" ".join([b"SEARCH", *(b"%d" % n for n in numbers)]))
            self.sendPositiveResponse(tag, b"SEARCH completed")

        d = deferToThread(evaluate, self.mbox.folder, tree, candidates, bool(uid))
        d.addCallback(found).addErrback(self._failed(tag, b"SEARCH"))

    def arg_searchline(self, line):
        """The criteria, with any literals ({n} or {n+}) read and put inline as quoted strings."""
        stripped = line.rstrip()
        start = stripped.rfind(b"{")
        if not stripped.endswith(b"}") or start < 0:
            return (line, b"")
        size, plus = self.literal_spec(stripped[start:])
        head = stripped[:start]

        def more(result):
            data, rest = result
            quoted = b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
            return self.arg_searchline(head + quoted + rest)

        return self._stringLiteral(size, plus).addCallback(more)

    select_SEARCH = (do_SEARCH, arg_searchline)

    # -- IDLE, ID, NAMESPACE --------------------------------------------------------------

    def do_IDLE(self, tag):
        """IDLE (RFC 2177): changes are pushed at once until the client sends DONE."""
        self._idle_tag = tag
        self.parseState = "idle"
        self.sendContinuationRequest(b"idling")
        if self.mbox is not None:
            self.mbox.sync(allow_expunge=True)

    def parse_idle(self, line):
        """The line that ends IDLE: DONE, anything else is BAD."""
        self.parseState = "command"
        tag, self._idle_tag = self._idle_tag, None
        if line.strip().upper() == b"DONE":
            self.sendPositiveResponse(tag, b"IDLE terminated")
        else:
            self.sendBadResponse(tag, b"Expected DONE")

    auth_IDLE = (do_IDLE,)
    select_IDLE = auth_IDLE

    def do_ID(self, tag, line):
        """ID (RFC 2971): the client's parameters are ignored; ours are name and version."""
        line = line.strip()
        if line.upper() != b"NIL" and not (line.startswith(b"(") and line.endswith(b")")):
            self.sendBadResponse(tag, b"ID takes NIL or a parenthesised list")
            return
        version = mailgw.__version__.encode("ascii")
        self.sendUntaggedResponse(b'ID ("name" "mailgw" "version" "' + version + b'")')
        self.sendPositiveResponse(tag, b"ID completed")

    unauth_ID = (do_ID, _Server.arg_line)
    auth_ID = unauth_ID
    select_ID = unauth_ID

    def do_NAMESPACE(self, tag):
        """NAMESPACE (RFC 2342): one personal namespace, no shared ones."""
        self.sendUntaggedResponse(b'NAMESPACE (("" ".")) NIL NIL')
        self.sendPositiveResponse(tag, b"NAMESPACE completed")

    auth_NAMESPACE = (do_NAMESPACE,)
    select_NAMESPACE = auth_NAMESPACE

    # -- LIST, LSUB, SUBSCRIBE ------------------------------------------------------------

    def _listWork(self, tag, ref, mbox, sub, cmdName):
        ref, pattern = _mailbox_name(ref), _mailbox_name(mbox)
        if not pattern and not sub:
            self.sendUntaggedResponse(cmdName + b' (\\Noselect) "." ""')
            self.sendPositiveResponse(tag, cmdName + b" completed")
            return

        def listed(mailboxes):
            for name, box in mailboxes:
                flags = [imap4.DontQuoteMe(flag.encode("ascii")) for flag in box.getFlags()]
                line = (imap4.DontQuoteMe(cmdName), flags, b".", name.encode("imap4-utf-7"))
                self.sendUntaggedResponse(imap4.collapseNestedLists(line))
            self.sendPositiveResponse(tag, cmdName + b" completed")

        d = self.account.listMailboxes(ref, pattern, bool(sub))
        d.addCallback(listed).addErrback(self._failed(tag, cmdName))

    auth_LIST = (_listWork, _Server.arg_astring, _Server.arg_astring, 0, b"LIST")
    select_LIST = auth_LIST
    auth_LSUB = (_listWork, _Server.arg_astring, _Server.arg_astring, 1, b"LSUB")
    select_LSUB = auth_LSUB

    def do_SUBSCRIBE(self, tag, name):
        """SUBSCRIBE: kept in the user's subscriptions file."""
        d = self.account.subscribe(_mailbox_name(name))
        d.addCallback(lambda _: self.sendPositiveResponse(tag, b"SUBSCRIBE completed"))
        d.addErrback(self._failed(tag, b"SUBSCRIBE"))

    auth_SUBSCRIBE = (do_SUBSCRIBE, _Server.arg_finalastring)
    select_SUBSCRIBE = auth_SUBSCRIBE

    def do_UNSUBSCRIBE(self, tag, name):
        """UNSUBSCRIBE."""
        d = self.account.unsubscribe(_mailbox_name(name))
        d.addCallback(lambda _: self.sendPositiveResponse(tag, b"UNSUBSCRIBE completed"))
        d.addErrback(self._unsubscribe_failed, tag)

    def _unsubscribe_failed(self, failure, tag):
        if failure.check(NoSuchMailbox):
            self.sendNegativeResponse(tag, b"[NONEXISTENT] Not subscribed")
        else:
            self._failed(tag, b"UNSUBSCRIBE")(failure)

    auth_UNSUBSCRIBE = (do_UNSUBSCRIBE, _Server.arg_finalastring)
    select_UNSUBSCRIBE = auth_UNSUBSCRIBE
