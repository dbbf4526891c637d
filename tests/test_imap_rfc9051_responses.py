"""RFC 9051 section 7's server responses that differ from RFC 3501's, replayed in an IMAP4rev2
session (``imap_replay`` says what is normalised): the response codes mailgw can be brought to
give, ENABLED, NAMESPACE, ESEARCH and FETCH with UID.

Not replayed, as mailgw cannot be brought into their conditions: ALERT, the disk-full NO and
BAD of 7.1.2/7.1.3, PREAUTH, CLIENTBUG, CONTACTADMIN, CORRUPTION, EXPIRED, INUSE, LIMIT (of
flags), NOPERM, OVERQUOTA; PRIVACYREQUIRED is tested in ``test_imap``, SERVERBUG and UNAVAILABLE
in ``test_imap_store_failures``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from imap_replay import (
    ALICE,
    Example,
    check,
    fill,
    letter,
    selected,
    store_all,
)

#: The ``port`` and ``connect`` fixtures.
pytest_plugins = ("imap_replay_fixtures",)


def flagged_at(count: int, flagged) -> Callable:
    """``count`` messages, those of ``flagged`` \\Flagged; INBOX selected."""

    @selected
    def setup(server, client) -> dict:
        fill(server.store.folder(ALICE), count, lambda n: {"\\Flagged"} if n in flagged else set())
        return {}

    return setup


@selected
def fetch_box(server, client) -> dict:
    """23 messages, 23 \\Seen."""
    inbox = server.store.folder(ALICE)
    uids = fill(inbox, 23, lambda n: {"\\Seen"} if n == 23 else set())
    size = inbox.get(uids[-1]).size
    return {"RFC822.SIZE 44827 UID 447": f"RFC822.SIZE {size} UID {uids[-1]}"}


@selected
def from_maria(server, client) -> dict:
    """42 messages, 1 to 3, 5, 8, 13, 21 and 42 from maria@example.com."""
    maria = (1, 2, 3, 5, 8, 13, 21, 42)
    letters = [
        (letter(n, "maria@example.com" if n in maria else "bob@elsewhere.test"), set())
        for n in range(1, 43)
    ]
    store_all(server.store.folder(ALICE), letters)
    return {}


def folders(*names: str) -> Callable:
    """A setup: the folders ``names`` created."""

    def setup(server, client) -> dict:
        for name in names:
            client.ok(b"c CREATE " + name.encode())
        return {}

    return setup


EXAMPLES = {
    "7.2.1-enabled": Example(
        """
        C: x ENABLE CONDSTORE QRESYNC
        S: * ENABLED CONDSTORE QRESYNC
        S: x OK
        """
    ),
    "7.3.2-namespace": Example(
        """
        C: n NAMESPACE
        S: * NAMESPACE (("" "/")) (("~" "/")) NIL
        S: n OK
        """,
        choices={'(("" "/"))': '(("" "."))'},
        differs={'* NAMESPACE (("" ".")) (("~" "/")) NIL': '* NAMESPACE (("" ".")) NIL NIL'},
        reason="mailgw shows no other users' mailboxes, so that namespace is NIL",
    ),
    "7.3.4-esearch-tag-uid": Example(
        """
        C: a567 UID SEARCH RETURN (COUNT ALL) FLAGGED
        S: * ESEARCH (TAG "a567") UID COUNT 17 ALL 4:18,21,28
        S: a567 OK
        """,
        flagged_at(28, {*range(4, 19), 21, 28}),
    ),
    "7.3.4-esearch-uid-no-tag": Example(
        """
        C: x UID SEARCH RETURN (COUNT ALL) FLAGGED
        S: * ESEARCH UID COUNT 17 ALL 4:18,21,28
        S: x OK
        """,
        flagged_at(28, {*range(4, 19), 21, 28}),
        differs={
            "* ESEARCH UID COUNT 17 ALL 4:18,21,28": (
                '* ESEARCH (TAG "x") UID COUNT 17 ALL 4:18,21,28'
            )
        },
        reason="an ESEARCH without the correlator is one no command caused (7.3.4); mailgw's "
        "ESEARCH always answers a command, so it carries the command's tag",
    ),
    "7.3.4-esearch-no-tag": Example(
        """
        C: x SEARCH RETURN (COUNT ALL) FLAGGED
        S: * ESEARCH COUNT 18 ALL 1:17,21
        S: x OK
        """,
        flagged_at(21, {*range(1, 18), 21}),
        differs={"* ESEARCH COUNT 18 ALL 1:17,21": '* ESEARCH (TAG "x") COUNT 18 ALL 1:17,21'},
        reason="as for the example before: mailgw's ESEARCH always carries its command's tag",
    ),
    "7.5.2-fetch-with-uid": Example(
        """
        C: f FETCH 23 (FLAGS RFC822.SIZE UID)
        S: * 23 FETCH (FLAGS (\\Seen) RFC822.SIZE 44827 UID 447)
        S: f OK
        """,
        fetch_box,
    ),
    "7.1-alreadyexists": Example(
        """
        C: o356 RENAME this that
        S: o356 NO [ALREADYEXISTS] Mailbox "that" already exists
        """,
        folders("this", "that"),
    ),
    "7.1-nonexistent": Example(
        """
        C: p RENAME this that
        S: p NO [NONEXISTENT] No such mailbox
        """
    ),
    "7.1-authenticationfailed": Example(
        """
        C: b LOGIN "fred" "foo"
        S: b NO [AUTHENTICATIONFAILED] Authentication failed
        """,
        login=False,
    ),
    "7.1-authorizationfailed": Example(
        """
        C: c1 AUTHENTICATE PLAIN YWRtaW4AYWxpY2VAZXhhbXBsZS50ZXN0AHNlY3JldA==
        S: c1 NO [AUTHORIZATIONFAILED] No such authorization-ID
        """,
        login=False,
        reason='the RFC elides the client\'s response ("..."); here it is the initial response '
        "(SASL-IR) of authorization identity admin, Alice's name and password",
    ),
    "7.1-cannot": Example(
        """
        C: l create "///////"
        S: l NO [CANNOT] Adjacent slashes are not supported
        """,
        choices={"///////": "......."},
    ),
    "7.1-haschildren": Example(
        """
        C: m356 DELETE Notes
        S: o356 NO [HASCHILDREN] Mailbox "Notes" has children
        """,
        folders("Notes", "Notes.Old"),
        differs={'o356 NO [HASCHILDREN] Mailbox "Notes" has children': "m356 OK"},
        reason="the RFC's tag o356 is a typo for m356; mailgw deletes a mailbox that has "
        "children, which 6.3.5 permits (Notes.Old stays)",
    ),
    "7.1-expungeissued": Example(
        """
        C: h search from maria@example.com
        S: * ESEARCH (TAG "h") ALL 1:3,5,8,13,21,42
        S: h OK [EXPUNGEISSUED] Search completed
        """,
        from_maria,
        differs={"h OK [EXPUNGEISSUED] Search completed": "h OK Search completed"},
        reason="EXPUNGEISSUED tells that another session expunged meanwhile; none did here",
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_rfc9051_example(connect, server, name):
    """The example replayed after ENABLE IMAP4rev2 (``imap_replay``: what is normalised)."""
    check(connect, server, EXAMPLES[name])
