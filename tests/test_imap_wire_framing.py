"""mailgw.imap.wire.framing: where commands end, and how limits refuse them."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.imap.wire.framing import (
    CommandAssembler,
    CommandReady,
    CommandRejected,
    ContinuationNeeded,
    literal_announced,
)

MESSAGE_LIMIT = 60 * 1024 * 1024
SMALL_LIMIT = 8192


def limit(first_line: bytes) -> int:
    """APPEND carries messages; everything else small strings (as the session will say)."""
    words = first_line.split(b" ", 2)
    return MESSAGE_LIMIT if len(words) > 1 and words[1].upper() == b"APPEND" else SMALL_LIMIT


def assembler(**kwargs) -> CommandAssembler:
    kwargs.setdefault("max_line", 1000)
    return CommandAssembler(literal_limit=limit, **kwargs)


def feed_all(asm: CommandAssembler, *chunks: bytes) -> list:
    events = []
    for chunk in chunks:
        events.extend(asm.feed(chunk))
    return events


def test_one_line_commands_and_pipelining():
    events = assembler().feed(b"a NOOP\r\nb CAPABILITY\r\nc LOG")
    assert events == [CommandReady(b"a NOOP\r\n"), CommandReady(b"b CAPABILITY\r\n")]


def test_bare_lf_ends_a_line():
    assert assembler().feed(b"a NOOP\nb NOOP\r\n") == [
        CommandReady(b"a NOOP\n"),
        CommandReady(b"b NOOP\r\n"),
    ]


def test_byte_at_a_time_gives_the_same_command():
    data = b"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n"
    asm = assembler()
    events = feed_all(asm, *(data[i : i + 1] for i in range(len(data))))
    assert events == [ContinuationNeeded(), CommandReady(data)]
    assert asm.idle


def test_synchronising_literal_asks_for_continuation_and_keeps_markers():
    asm = assembler()
    assert asm.feed(b"a LOGIN {5}\r\n") == [ContinuationNeeded()]
    assert not asm.idle
    assert asm.feed(b"al") == []
    assert asm.feed(b"ice pw\r\n") == [CommandReady(b"a LOGIN {5}\r\nalice pw\r\n")]


def test_literal_containing_crlf_and_braces_is_opaque():
    data = b"a APPEND INBOX {12+}\r\nx {3}\r\ny\r\n\r\n\r\n"
    assert assembler().feed(data) == [CommandReady(data)]


def test_empty_literal():
    data = b"a LOGIN {0}\r\n {0+}\r\n\r\n"
    assert assembler().feed(data) == [ContinuationNeeded(), CommandReady(data)]


def test_literal8_is_framed_like_a_literal():
    data = b"a APPEND INBOX ~{3+}\r\n\x00\x01\x02\r\n"
    assert assembler().feed(data) == [CommandReady(data)]


def test_malformed_sizes_are_left_to_the_parser():
    for line in (b"a LOGIN {-1}\r\n", b"a LOGIN {abc}\r\n", b"a LOGIN {%s}\r\n" % (b"9" * 21)):
        assert assembler().feed(line) == [CommandReady(line)]


def test_literal_announced():
    assert literal_announced(b"a X {12}") == (12, True)
    assert literal_announced(b"a X {12+}") == (12, False)
    assert literal_announced(b"a X {+}") is None
    assert literal_announced(b"a X {1 2}") is None
    assert literal_announced(b"a X {\xd9\xa3}") is None
    assert literal_announced(b"a X") is None


def test_over_long_line_refused_before_its_end_then_skipped():
    asm = assembler(max_line=100)
    events = asm.feed(b"t1 LOGIN " + b"x" * 200)
    assert events == [CommandRejected((b"t1 LOGIN " + b"x" * 200)[:100], "line too long", False)]
    assert asm.feed(b"y" * 5000) == []
    assert asm.feed(b"zz\r\nt2 NOOP\r\n") == [CommandReady(b"t2 NOOP\r\n")]


def test_over_long_line_ending_in_literal_plus_skips_the_literal_too():
    asm = assembler(max_line=50)
    events = asm.feed(b"t1 LOGIN " + b"x" * 80 + b" {10+}\r\n0123456789\r\nt2 NOOP\r\n")
    assert [type(e) for e in events] == [CommandRejected, CommandReady]
    assert events[1] == CommandReady(b"t2 NOOP\r\n")


def test_over_long_line_complete_in_one_chunk():
    asm = assembler(max_line=10)
    events = asm.feed(b"t1 NOOP" + b" " * 20 + b"\r\nt2 NOOP\r\n")
    assert events == [
        CommandRejected(b"t1 NOOP   ", "line too long", False),
        CommandReady(b"t2 NOOP\r\n"),
    ]


def test_over_long_line_after_a_literal_refuses_the_whole_command():
    asm = assembler(max_line=20)
    events = asm.feed(b"a LOGIN {3}\r\nabc " + b"p" * 30 + b"\r\nb NOOP\r\n")
    assert events == [
        ContinuationNeeded(),
        CommandRejected(b"a LOGIN {3}\r\n", "line too long", False),
        CommandReady(b"b NOOP\r\n"),
    ]


def test_line_at_the_limit_is_accepted():
    line = b"a NOOP " + b"x" * 93
    assert len(line) == 100
    assert assembler(max_line=100).feed(line + b"\r\n") == [CommandReady(line + b"\r\n")]


def test_too_large_synchronising_literal_is_refused_and_the_session_goes_on():
    asm = assembler()
    events = asm.feed(b"a LOGIN {9000}\r\nb NOOP\r\n")
    assert events == [
        CommandRejected(b"a LOGIN {9000}\r\n", "literal too large (at most 8192 octets)", False),
        CommandReady(b"b NOOP\r\n"),
    ]


def test_too_large_non_synchronising_literal_is_fatal():
    asm = assembler()
    events = asm.feed(b"a LOGIN {9000+}\r\n" + b"x" * 100)
    assert len(events) == 1 and events[0].fatal
    assert asm.closed
    assert asm.feed(b"b NOOP\r\n") == []


def test_literal_limit_sees_the_first_line():
    seen = []

    def record(first: bytes) -> int:
        seen.append(first)
        return 100

    asm = CommandAssembler(1000, record)
    asm.feed(b"a APPEND INBOX {3+}\r\nabc {2+}\r\nde\r\n")
    assert seen == [b"a APPEND INBOX {3+}", b"a APPEND INBOX {3+}"]


def test_append_may_carry_a_message_but_login_not():
    big = 100_000
    data = b"a APPEND INBOX {%d+}\r\n" % big + b"x" * big + b"\r\n"
    assert assembler().feed(data) == [CommandReady(data)]
    assert assembler().feed(b"a LOGIN {%d+}\r\n" % big)[0].fatal


def test_too_many_literals():
    asm = assembler(max_literals=3)
    data = b"a LOGIN {1+}\r\nx {1+}\r\ny {1+}\r\nz {1}\r\n"
    events = asm.feed(data)
    assert events == [CommandRejected(b"a LOGIN {1+}\r\n", "too many literals", False)]


def test_whole_command_bound():
    asm = assembler(max_command=50)
    events = asm.feed(b"a LOGIN {30+}\r\n" + b"x" * 30 + b" {30}\r\n")
    assert events == [CommandRejected(b"a LOGIN {30+}\r\n", "command too long", False)]
    assert asm.feed(b"b NOOP\r\n") == [CommandReady(b"b NOOP\r\n")]


def test_reset_forgets_a_partial_command():
    asm = assembler()
    asm.feed(b"a LOGIN {5}\r\nab")
    asm.reset()
    assert asm.idle
    assert asm.feed(b"b NOOP\r\n") == [CommandReady(b"b NOOP\r\n")]


def test_fifty_megabytes_in_64k_chunks_is_linear():
    size = 50 * 1024 * 1024
    chunk = b"x" * 65536
    asm = assembler()
    started = time.perf_counter()
    events = asm.feed(b"a APPEND INBOX {%d}\r\n" % size)
    for _ in range(size // len(chunk)):
        events += asm.feed(chunk)
    events += asm.feed(b"\r\n")
    assert time.perf_counter() - started < 2
    assert events[0] == ContinuationNeeded()
    assert len(events[1].data) == size + len(b"a APPEND INBOX {%d}\r\n" % size) + 2


def test_long_line_in_small_chunks_is_linear():
    asm = assembler(max_line=2_000_000)
    started = time.perf_counter()
    for _ in range(1000):
        asm.feed(b"(" * 1000)
    events = asm.feed(b"\r\n")
    assert time.perf_counter() - started < 1
    assert len(events[0].data) == 1_000_002


LINE_PART = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").rstrip(b"}"))
LITERAL = st.tuples(st.binary(max_size=20), st.booleans())


@st.composite
def commands(draw):
    """A command of lines and literals, and whether each literal is synchronising."""
    data, syncs = draw(LINE_PART), []
    for octets, sync in draw(st.lists(LITERAL, max_size=3)):
        data += b" {%d%s}\r\n" % (len(octets), b"" if sync else b"+") + octets
        data += draw(LINE_PART)
        syncs.append(sync)
    return data + b"\r\n", syncs


@settings(max_examples=150, deadline=None)
@given(st.lists(commands(), min_size=1, max_size=4), st.data())
def test_pipelined_commands_in_any_chunks(cmds, draw):
    stream = b"".join(data for data, _ in cmds)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    expected = []
    for data, syncs in cmds:
        expected += [ContinuationNeeded()] * sum(syncs) + [CommandReady(data)]
    assert feed_all(assembler(), *pieces) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_any_bytes_give_only_events(chunks):
    asm = assembler(max_line=40)
    for chunk in chunks:
        for event in asm.feed(chunk):
            assert isinstance(event, CommandReady | ContinuationNeeded | CommandRejected)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_chunking_does_not_change_the_events(data, draw):
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=10)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    assert feed_all(assembler(max_line=40), *pieces) == assembler(max_line=40).feed(data)
