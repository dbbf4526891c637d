"""The selected folder's view as FETCH walks it: ``row_batches`` gives exactly the rows that
``resolve`` and ``rows`` give, in order, for every kind of set, and each batch shows the view
as it is when the batch is made (flags a FETCH set in an earlier batch are seen by later ones)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.imap.view import SEEN, FolderView, Snapshot
from mailgw.imap.wire.commands import SequenceSet
from mailgw.store.message import MessageInfo


def _info(uid: int, flags=frozenset()) -> MessageInfo:
    return MessageInfo(uid, f"{uid}.M1P1.host,S=10,W=10", frozenset(flags), False, "2,", 10)


def _view(uids: list[int], recent: set[int], gone: set[int]) -> FolderView:
    view = FolderView(Snapshot([_info(uid) for uid in uids]), recent=recent & set(uids))
    if gone:
        view.note_expunged(sorted(gone & set(uids)))
    return view


_number = st.one_of(st.none(), st.integers(1, 60))
_sets = st.lists(st.tuples(_number, _number), min_size=1, max_size=4).map(
    lambda ranges: SequenceSet(tuple(ranges))
)


@settings(max_examples=300, deadline=None)
@given(
    uids=st.lists(st.integers(1, 50), unique=True).map(sorted),
    recent=st.sets(st.integers(1, 50)),
    gone=st.sets(st.integers(1, 50), max_size=3),
    messages=_sets,
    by_uid=st.booleans(),
    size=st.integers(1, 7),
)
def test_row_batches_are_the_resolved_rows_in_batches(uids, recent, gone, messages, by_uid, size):
    view = _view(uids, recent, gone)
    expected = list(view.rows(view.resolve(messages, by_uid)))
    batches = list(view.row_batches(messages, by_uid, size))
    assert [row for batch in batches for row in batch] == expected
    assert all(0 < len(batch) <= size for batch in batches)


def test_saved_result_is_walked_as_resolve_gives_it():
    view = _view(list(range(1, 11)), set(), set())
    view.saved = (2, 5, 9)
    rows = [row for batch in view.row_batches(SequenceSet(saved=True), True, 2) for row in batch]
    assert [(seq, info.uid) for seq, info, _ in rows] == [(2, 2), (5, 5), (9, 9)]


def test_a_later_batch_sees_flags_set_while_an_earlier_one_was_sent():
    view = _view(list(range(1, 7)), {6}, set())
    walk = view.row_batches(SequenceSet(((1, None),)), False, 3)
    first = next(walk)
    assert all(SEEN not in info.flags for _, info, _ in first)
    view.apply_flags([_info(uid, {SEEN}) for uid in range(1, 7)])
    second = next(walk)
    assert [(seq, SEEN in info.flags, recent) for seq, info, recent in second] == [
        (4, True, False),
        (5, True, False),
        (6, True, True),
    ]


@settings(max_examples=200, deadline=None)
@given(
    flags=st.lists(st.sets(st.sampled_from([SEEN, "\\Flagged", "$Junk"])), max_size=30),
    gone=st.sets(st.integers(1, 30), max_size=4),
    flag=st.sampled_from([SEEN, "\\Flagged", "$Junk"]),
    wanted=st.booleans(),
    by_uid=st.booleans(),
)
def test_with_flag_finds_what_a_search_over_every_row_finds(flags, gone, flag, wanted, by_uid):
    infos = [_info(2 * n + 1, f) for n, f in enumerate(flags)]  # UIDs with gaps: 1, 3, 5...
    view = FolderView(Snapshot(infos))
    view.note_expunged(sorted(u for u in gone if u % 2))
    rows = view.rows(view.resolve(SequenceSet(((1, None),)), False))
    expected = [
        info.uid if by_uid else seq for seq, info, _ in rows if (flag in info.flags) is wanted
    ]
    assert view.with_flag(flag, wanted, by_uid) == expected
