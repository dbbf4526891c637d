"""Who gets the mail: aliases, catch-alls, postmaster@ and subaddresses, over smtplib, and the
submission sender check that follows from them.  Real server, real store, a real aliases file."""

from __future__ import annotations

import dataclasses
import os
import smtplib
from pathlib import Path

import pytest
from conftest import FAST_GUARD, LiveServer, make_config
from test_smtp import ALICE, BOB, BODY, connect, split_trace, stored
from twisted.logger import formatEvent, globalLogPublisher

from mailgw.recipients import parse_aliases
from mailgw.smtp import make_factory

CAROL = "carol@localhost"
ALIASES = """\
# sales goes to two people; info to an alias
sales@example.test: alice@example.test, Bob@Example.Test
info@example.test: sales@example.test
# a user's name as an alias wins over the user
bob@localhost: carol@localhost
@localhost: carol@localhost
loop1@example.test: loop2@example.test
loop2@example.test: loop1@example.test, alice@example.test
self@example.test: self@example.test
"""


@pytest.fixture
def make(tmp_path: Path):
    """Build a LiveServer (users alice, bob, carol) with an aliases file and config overrides."""
    made: list[LiveServer] = []

    def build(aliases: str = ALIASES, **overrides) -> LiveServer:
        path = tmp_path / f"aliases{len(made)}"
        path.write_text(aliases)
        overrides.setdefault("aliases_file", path)
        srv = LiveServer(make_config(tmp_path / f"data{len(made)}", **overrides))
        made.append(srv)
        for user in (ALICE, BOB, CAROL):
            srv.add_user(user)
        srv.aliases = path
        srv.port = srv.listen(make_factory)
        return srv

    yield build
    for srv in made:
        srv.close()


@pytest.fixture
def logged():
    """Every log event's text while the test runs."""
    events: list[str] = []

    def observe(event: dict) -> None:
        events.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def rcpt_codes(port: int, *addresses: str) -> list[int]:
    """The RCPT reply code for each address, in one transaction that is then reset."""
    with connect(port) as smtp:
        smtp.ehlo()
        smtp.mail("dave@remote.test")
        codes = [smtp.rcpt(address)[0] for address in addresses]
        smtp.rset()
    return codes


def test_alias_delivers_one_copy_to_each_target(make):
    srv = make()
    with connect(srv.port) as smtp:
        assert smtp.sendmail("dave@remote.test", ["sales@example.test", ALICE], BODY) == {}
    assert [split_trace(m)[1] for m in stored(srv, ALICE)] == [BODY]
    [for_bob] = stored(srv, BOB)
    assert split_trace(for_bob)[1] == BODY


def test_nested_alias_and_the_for_clause_names_the_envelope_recipient(make):
    srv = make()
    with connect(srv.port) as smtp:
        smtp.sendmail("dave@remote.test", ["Info@Example.Test"], BODY)
    [message] = stored(srv, BOB)
    added, _ = split_trace(message)
    assert b"for <Info@example.test>;" in b" ".join(added)
    assert len(stored(srv, ALICE)) == 1


def test_alias_shadows_a_user_and_catch_all_takes_the_rest(make):
    srv = make()
    with connect(srv.port) as smtp:
        smtp.sendmail("dave@remote.test", ["bob@localhost", "anything@localhost"], BODY)
    assert len(stored(srv, CAROL)) == 1, "one copy, though two recipients lead to carol"
    assert stored(srv, BOB) == []


def test_catch_all_is_per_domain(make):
    srv = make()
    assert rcpt_codes(srv.port, "anything@localhost", "anything@example.test") == [250, 550]


def test_alias_loops_are_bounded(make, logged):
    srv = make()
    assert rcpt_codes(srv.port, "loop1@example.test", "self@example.test") == [250, 550]
    with connect(srv.port) as smtp:
        smtp.sendmail("dave@remote.test", ["loop1@example.test"], BODY)
    assert len(stored(srv, ALICE)) == 1
    assert any("alias loop loop1@example.test -> loop2@example.test" in e for e in logged)


def test_subaddress_goes_to_the_user(make):
    srv = make()
    with connect(srv.port) as smtp:
        smtp.sendmail("dave@remote.test", ["alice+lists@example.test"], BODY)
    [message] = stored(srv, ALICE)
    assert b"for <alice+lists@example.test>;" in message
    assert rcpt_codes(srv.port, "sales+x@example.test", "+x@example.test") == [250, 550]


def test_recipient_delimiter_is_configurable(make):
    srv = make(recipient_delimiter="-")
    assert rcpt_codes(srv.port, "alice-x@example.test", "alice+x@example.test") == [250, 550]
    srv = make(recipient_delimiter="")
    assert rcpt_codes(srv.port, "alice-x@example.test", "alice+x@example.test") == [550, 550]


def test_postmaster_of_every_domain_is_accepted(make):
    srv = make("", postmaster=ALICE)
    with connect(srv.port) as smtp:
        recipients = ["postmaster@example.test", "PostMaster@localhost", "postmaster"]
        assert smtp.sendmail("dave@remote.test", recipients, BODY) == {}
    assert len(stored(srv, ALICE)) == 1


def test_postmaster_alias_wins_and_defaults_to_the_first_domain(make):
    srv = make("postmaster@example.test: bob@example.test\n")
    assert rcpt_codes(srv.port, "postmaster@localhost", "postmaster") == [250, 250]
    with connect(srv.port) as smtp:
        smtp.sendmail("dave@remote.test", ["postmaster@localhost"], BODY)
    assert len(stored(srv, BOB)) == 1


def test_postmaster_with_nobody_to_receive_it_is_deferred_not_refused(make, logged):
    srv = make("")
    with connect(srv.port) as smtp:
        smtp.ehlo()
        smtp.mail("dave@remote.test")
        code, text = smtp.rcpt("postmaster@example.test")
    assert (code, text[:6]) == (451, b"4.3.5 ")
    assert any("set [mailgw] postmaster" in event for event in logged)


def test_aliases_file_is_reloaded_and_bad_lines_are_skipped(make, logged):
    srv = make("sales@example.test: alice@example.test\n")
    assert rcpt_codes(srv.port, "sales@example.test", "team@example.test") == [250, 550]
    srv.aliases.write_text(
        "team@example.test: bob@example.test\n"
        "no colon here\n"
        "outside@example.test: someone@elsewhere.test\n"
        "mixed@example.test: someone@elsewhere.test, alice@example.test\n"
        "bad address@example.test: alice@example.test\n"
        "x@elsewhere.test: alice@example.test\n"
        "later@example.test: nobody-yet@example.test\n"
    )
    os.utime(srv.aliases, ns=(1, 1))
    codes = rcpt_codes(
        srv.port,
        "team@example.test",
        "sales@example.test",
        "outside@example.test",
        "mixed@example.test",
        "later@example.test",
    )
    assert codes == [250, 550, 550, 250, 550]
    text = "\n".join(logged)
    assert "line 2: no ':' after the alias" in text
    assert "line 3: target someone@elsewhere.test skipped: not in a local domain" in text
    assert "line 5: bad alias" in text
    assert "line 6: alias 'x@elsewhere.test' is not in a local domain" in text
    assert "target nobody-yet@example.test is not a local user or alias" in text
    srv.add_user("nobody-yet@example.test")
    assert rcpt_codes(srv.port, "later@example.test") == [250], "users are looked up live"


def test_unreadable_aliases_file_keeps_the_last_good_version(make, logged):
    srv = make("sales@example.test: alice@example.test\n")
    assert rcpt_codes(srv.port, "sales@example.test") == [250]
    srv.aliases.write_bytes(b"sales@example.test: \xff\xfe\n")
    assert rcpt_codes(srv.port, "sales@example.test") == [250]
    assert any("cannot be read" in event for event in logged)
    srv.aliases.unlink()
    assert rcpt_codes(srv.port, "sales@example.test") == [550]


def test_no_aliases_file_configured(make):
    srv = make(aliases_file=None)
    assert rcpt_codes(srv.port, "sales@example.test", "alice+x@example.test") == [550, 250]


RELAY_TRICKS_WITH_CATCH_ALL = [
    "<alice%elsewhere.test@localhost>",
    '<"someone@elsewhere.test"@localhost>',
    "<@localhost:someone@elsewhere.test>",
    "<someone@elsewhere.test@localhost>",
    "<elsewhere.test!someone@localhost>",
]


def test_a_catch_all_never_swallows_relay_tricks(make):
    srv = make()
    with connect(srv.port) as smtp:
        smtp.ehlo()
        smtp.mail("dave@remote.test")
        for path in RELAY_TRICKS_WITH_CATCH_ALL:
            assert smtp.docmd("RCPT", f"TO:{path}") == (554, b"5.7.1 Relay access denied"), path
    assert stored(srv, CAROL) == []


# -- submission: whose addresses a user may send from


def mail_from_replies(srv: LiveServer, user: str, senders: list[str]) -> dict[str, int]:
    """Log in as ``user`` on a submission listener; the MAIL reply code for each sender.

    Each accepted sender also sends a message to carol."""
    port = srv.listen(make_factory, submission=True)
    codes = {}
    with connect(port) as smtp:
        smtp.ehlo()
        smtp.login(user, "secret")
        for sender in senders:
            code, text = smtp.docmd("MAIL", f"FROM:<{sender}>" if sender else "FROM:<>")
            codes[sender] = code
            if code == 250:
                smtp.rcpt(CAROL)
                assert smtp.data(BODY)[0] == 250
            else:
                assert text.startswith(b"5.7.1 "), text
    return codes


OWN_SENDERS = [
    "alice@example.test",
    "Alice@EXAMPLE.test",
    "alice+news@example.test",
    "sales@example.test",
    "info@example.test",
    "loop1@example.test",
]
FOREIGN_SENDERS = [
    "bob@example.test",
    "anything@localhost",
    "self@example.test",
    "alice@elsewhere.test",
    "",
]


def test_submission_sender_may_be_own_address_or_alias(make):
    srv = make()
    codes = mail_from_replies(srv, ALICE, OWN_SENDERS)
    assert codes == dict.fromkeys(OWN_SENDERS, 250)
    assert len(stored(srv, CAROL)) == len(OWN_SENDERS)


def test_submission_sender_not_owned_is_refused(make):
    srv = make()
    assert mail_from_replies(srv, ALICE, FOREIGN_SENDERS) == dict.fromkeys(FOREIGN_SENDERS, 553)


def test_wrong_passwords_are_counted_by_the_guard(tmp_path):
    guard = dataclasses.replace(FAST_GUARD, max_failures=2, block_seconds=60.0)
    srv = LiveServer(make_config(tmp_path / "data", guard=guard))
    srv.add_user(ALICE)
    try:
        port = srv.listen(make_factory, submission=True)
        with connect(port) as smtp:
            smtp.ehlo()
            for _ in range(2):
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    smtp.login(ALICE, "wrong")
            with pytest.raises(smtplib.SMTPAuthenticationError) as blocked:
                smtp.login(ALICE, "secret")
        assert blocked.value.smtp_code == 535
    finally:
        srv.close()


# -- the parser on its own


def test_parse_aliases_reports_line_numbers():
    text = "a@d.test: b@d.test\n\n# c\n@d.test: a@d.test, a@d.test\nbroken\n@x.test: a@d.test\n"
    aliases, errors = parse_aliases(text, frozenset({"d.test"}))
    assert aliases == {"a@d.test": ("b@d.test",), "@d.test": ("a@d.test",)}
    assert [number for number, _ in errors] == [5, 6]
