"""RFC 9051 6.3.9.8's LIST examples replayed in an IMAP4rev2 session (``imap_replay`` says what
is normalised): examples 7 and 9 (CHILDINFO, \\NonExistent parents), 10 (a missing level of the
hierarchy, \\NonExistent \\HasChildren) and 11 (RETURN (STATUS)).  Examples 1 to 6 are RFC
5258's, replayed in ``test_imap_list``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from imap_replay import (
    ALICE,
    Example,
    check,
    fill,
)
from test_imap_list import user_dir

#: The ``port`` and ``connect`` fixtures.
pytest_plugins = ("imap_replay_fixtures",)


def music(server, client) -> dict:
    """Example 10's hierarchy: ``music.rock``, and no ``music``."""
    client.only_inbox()
    client.ok(b"c CREATE music.rock")
    client.ok(b"d DELETE music")
    return {}


def foo_and_bar(server, client) -> dict:
    """Example 11's mailboxes: INBOX (17, 1 \\Seen) and foo (30, 1 \\Seen), subscribed INBOX
    and foo.sub, and bar.baz without bar (made as another program would)."""
    client.only_inbox()
    client.ok(b"c CREATE foo")
    client.ok(b"s SUBSCRIBE INBOX")
    client.ok(b"s SUBSCRIBE foo.sub")
    fill(server.store.folder(ALICE), 17, lambda n: {"\\Seen"} if n == 1 else set())
    fill(server.store.folder(ALICE, "foo"), 30, lambda n: {"\\Seen"} if n == 1 else set())
    for sub in ("cur", "new", "tmp"):
        (user_dir(server) / ".bar.baz" / sub).mkdir(parents=True)
    return {}


def hierarchy(folders=(), subscribed=(), missing=()) -> Callable:
    """A setup: only INBOX and ``folders``, less ``missing`` (their children stay), with
    exactly ``subscribed`` subscribed."""

    def setup(server, client) -> dict:
        client.only_inbox()
        for name in folders:
            client.ok(b"c CREATE " + name.encode())
        for name in missing:
            client.ok(b"d DELETE " + name.encode())
        for name in subscribed:
            client.ok(b"s SUBSCRIBE " + name.encode())
        return {}

    return setup


#: Example 7's hierarchy (6.3.9.8), and how its names are written there -> here.
_FOO = ("Foo", "Foo.Bar", "Foo.Baz", "Moo")
_FOO_NAMES = {
    '(\\Marked \\NoInferiors) "/" "inbox"': '() "." "INBOX"',
    '"/" "Foo/Bar"': '"." "Foo.Bar"',
    '"/" "Foo/Baz"': '"." "Foo.Baz"',
    '"/"': '"."',
}
_INBOX_REASON = (
    "mailgw's INBOX is an ordinary mailbox: no \\Marked, and children may be made under it "
    "(no \\NoInferiors)"
)


EXAMPLES = {
    "6.3.9.8-example-10-missing-hierarchy": Example(
        """
        C: a1 LIST (REMOTE) "" *
        S: * LIST () "/" music/rock
        S: * LIST (\\Remote) "/" also/jazz
        S: a1 OK done
        C: a2 LIST () "" %
        S: * LIST (\\NonExistent \\HasChildren) "/" music
        S: a2 OK done
        C: a3 LIST (REMOTE) "" %
        S: * LIST (\\NonExistent \\HasChildren) "/" music
        S: * LIST (\\NonExistent \\HasChildren) "/" also
        S: a3 OK done
        C: a3.1 LIST "" (% music/rock)
        S: * LIST () "/" music/rock
        S: a3.1 OK done
        """,
        music,
        choices={'"/" music/rock': '"." "music.rock"', "music/rock": "music.rock"}
        | {'"/" music': '"." "music"'},
        differs={
            '* LIST () "." "music.rock"': '* LIST () "." "INBOX"\n'
            '* LIST (\\NonExistent \\HasChildren) "." "music"\n* LIST () "." "music.rock"',
            '* LIST (\\NonExistent \\HasChildren) "." "music"': '* LIST () "." "INBOX"\n'
            '* LIST (\\NonExistent \\HasChildren) "." "music"',
            '* LIST (\\Remote) "/" also/jazz': "",
            '* LIST (\\NonExistent \\HasChildren) "/" also': "",
        },
        reason="mailgw has INBOX in every hierarchy and no remote mailboxes (also/jazz); it "
        "lists every level above a mailbox, so * and (% music.rock) give music too (the RFC: "
        '"clients must handle both cases")',
    ),
    "6.3.9.8-example-11-list-status": Example(
        """
        C: A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))
        S: * LIST () "."  "INBOX"
        S: * STATUS "INBOX" (MESSAGES 17 UNSEEN 16)
        S: * LIST () "." "foo"
        S: * STATUS "foo" (MESSAGES 30 UNSEEN 29)
        S: * LIST (\\NoSelect) "." "bar"
        S: A01 OK List completed.
        C: A02 LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (STATUS
             (MESSAGES))
        S: * LIST (\\Subscribed) "."  "INBOX"
        S: * STATUS "INBOX" (MESSAGES 17)
        S: * LIST () "." "foo" (CHILDINFO ("SUBSCRIBED"))
        S: A02 OK List completed.
        """,
        foo_and_bar,
        choices={"(CHILDINFO (": '("CHILDINFO" ('},
        differs={
            '* LIST () "."  "INBOX"': '* LIST () "." "INBOX"',
            '* LIST (\\Subscribed) "."  "INBOX"': '* LIST (\\Subscribed) "." "INBOX"',
            '* LIST () "." "foo"': '* LIST (\\NonExistent \\HasChildren) "." "bar"\n'
            '* LIST () "." "foo"',
            '* LIST (\\NoSelect) "." "bar"': "",
        },
        reason='the RFC\'s two spaces after "." are a typo (one SP in the grammar); mailgw lists '
        "names in order (bar before foo); bar is no mailbox at all here (only bar.baz is), "
        "which IMAP4rev2 tells as \\NonExistent \\HasChildren (example 10)",
    ),
    "6.3.9.8-example-7-hierarchy": Example(
        """
        C: C01 LIST "" "*"
        S: * LIST (\\Marked \\NoInferiors) "/" "inbox"
        S: * LIST () "/" "Foo"
        S: * LIST () "/" "Foo/Bar"
        S: * LIST () "/" "Foo/Baz"
        S: * LIST () "/" "Moo"
        S: C01 OK done
        """,
        hierarchy(_FOO),
        choices=_FOO_NAMES,
        reason=_INBOX_REASON,
    ),
    "6.3.9.8-example-7-children": Example(
        """
        C: CA3 LIST "" "%" RETURN (CHILDREN)
        S: * LIST (\\Marked \\NoInferiors) "/" "inbox"
        S: * LIST (\\HasChildren) "/" "Foo"
        S: * LIST (\\HasNoChildren) "/" "Moo"
        S: CA3 OK done
        """,
        hierarchy(_FOO),
        choices=_FOO_NAMES,
        differs={'* LIST () "." "INBOX"': '* LIST (\\HasNoChildren) "." "INBOX"'},
        reason=_INBOX_REASON + "; so with CHILDREN it is \\HasNoChildren",
    ),
    "6.3.9.8-example-7a-childinfo": Example(
        """
        C: C02 LIST (SUBSCRIBED) "" "*"
        S: * LIST (\\Subscribed) "/" "Foo/Baz"
        S: C02 OK done
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: * LIST () "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))
        S: C04 OK done
        """,
        hierarchy(_FOO, ["Foo.Baz"]),
        choices=_FOO_NAMES,
    ),
    "6.3.9.8-example-7a1-subscribed-parent": Example(
        """
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: * LIST (\\Subscribed) "/" "Foo" ("CHILDINFO"
            ("SUBSCRIBED"))
        S: C04 OK done
        """,
        hierarchy(_FOO, ["Foo", "Foo.Baz"]),
        choices=_FOO_NAMES,
    ),
    "6.3.9.8-example-7a2-nonexistent-parent": Example(
        """
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: * LIST (\\NonExistent) "/" "Foo" ("CHILDINFO"
            ("SUBSCRIBED"))
        S: C04 OK done
        """,
        hierarchy(_FOO, ["Foo.Baz"], missing=["Foo"]),
        choices=_FOO_NAMES,
    ),
    "6.3.9.8-example-7b-nothing-subscribed": Example(
        """
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"
        S: C04 OK done
        """,
        hierarchy(_FOO),
    ),
    "6.3.9.8-example-7c-children-subscribed": Example(
        """
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN
            (CHILDREN)
        S: * LIST (\\HasChildren \\Subscribed) "/" "Foo"
        S: * LIST (\\HasNoChildren \\Subscribed) "/" "Moo"
        S: C04 OK done
        """,
        hierarchy(_FOO, ["Foo", "Moo"]),
        choices=_FOO_NAMES,
        differs={
            '* LIST (\\HasChildren \\Subscribed) "." "Foo"': (
                '* LIST (\\Subscribed \\HasChildren) "." "Foo"'
            ),
            '* LIST (\\HasNoChildren \\Subscribed) "." "Moo"': (
                '* LIST (\\Subscribed \\HasNoChildren) "." "Moo"'
            ),
        },
        reason="mailgw gives \\Subscribed first, as example 7 A1's second answer does "
        "(attributes are a set, 6.3.9.3)",
    ),
    "6.3.9.8-example-9-childinfo-without-children": Example(
        """
        C: a1 LIST "" ("foo")
        S: * LIST () "/" foo
        S: a1 OK done
        C: a2 LIST (SUBSCRIBED) "" "foo/*"
        S: * LIST (\\Subscribed \\NonExistent) "/" foo/bar
        S: a2 OK done
        C: a3 LIST (SUBSCRIBED RECURSIVEMATCH) "" foo RETURN (CHILDREN)
        S: * LIST (\\HasNoChildren) "/" foo ("CHILDINFO" ("SUBSCRIBED"))
        S: a3 OK done
        """,
        hierarchy(["foo"], ["foo.bar"]),
        choices={'"/" foo/bar': '"." "foo.bar"', '"/" foo': '"." "foo"', "foo/*": "foo.*"},
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_rfc9051_example(connect, server, name):
    """The example replayed after ENABLE IMAP4rev2 (``imap_replay``: what is normalised)."""
    check(connect, server, EXAMPLES[name])
