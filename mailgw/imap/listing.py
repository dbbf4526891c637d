"""What LIST and LSUB answer, computed from folder names and subscriptions alone (pure).

RFC 3501 6.3.8/6.3.9 with LIST-EXTENDED (RFC 5258) and SPECIAL-USE (RFC 6154):

- ``*`` matches anything, ``%`` anything but the hierarchy delimiter ``.``; the reference and the
  pattern are joined as they are; ``INBOX`` matches in any case.
- The parents of folders are listed too (a Maildir++ ``a.b`` implies ``a``); those that are no
  folder are ``\\Noselect``.  A subscribed name without a folder is ``\\NonExistent`` under the
  SUBSCRIBED selection; LSUB lists it plainly, and a ``%`` that stops above a subscribed name
  lists its parent as ``\\Noselect`` (RFC 3501 6.3.9).  For IMAP4rev2 sessions such a parent
  is ``\\NonExistent`` (and ``\\HasChildren`` outside SUBSCRIBED), as RFC 9051 6.3.9.8 shows.
- ``\\HasChildren``/``\\HasNoChildren`` are given when the CHILDREN return option asks for them;
  ``\\Subscribed`` with SUBSCRIBED (selection or return option); the special-use attribute of a
  folder always (RFC 6154 allows it), and the SPECIAL-USE selection keeps only such folders.
- RECURSIVEMATCH: a name the patterns match whose subscribed descendants they do not match is
  listed with ``CHILDINFO ("SUBSCRIBED")`` (RFC 5258 3.5), subscribed itself or not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

DELIMITER = "."


def pattern_matcher(reference: str, pattern: str) -> Callable[[str], bool]:
    """A test of whole names against ``reference + pattern`` (``*``, ``%`` wildcards; INBOX in
    any case)."""
    parts = []
    for char in reference + pattern:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append("[^" + re.escape(DELIMITER) + "]*")
        else:
            parts.append(re.escape(char))
    exact = re.compile("".join(parts), re.DOTALL)
    folded = re.compile("".join(parts), re.DOTALL | re.IGNORECASE)

    def matches(name: str) -> bool:
        return bool(exact.fullmatch(name) or name == "INBOX" and folded.fullmatch(name))

    return matches


def parents(name: str) -> list[str]:
    """The names above ``name`` in the hierarchy (``a.b.c``: ``a``, ``a.b``)."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:depth]) for depth in range(1, len(levels))]


@dataclass(frozen=True)
class Listed:
    """One LIST/LSUB response: the name, its attributes, whether it carries
    ``CHILDINFO ("SUBSCRIBED")``, and whether the ``STATUS`` of RFC 5819 follows it (a folder
    that meets the selection, not one listed only for its children)."""

    name: str
    attributes: tuple[str, ...]
    child_info: bool = False
    with_status: bool = True


@dataclass(frozen=True)
class Query:
    """A LIST's options: upper-cased selection and return options (RFC 5258)."""

    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    #: For an IMAP4rev2 session: a parent that is no folder is ``\\NonExistent`` rather than
    #: ``\\Noselect``, and ``\\HasChildren`` outside SUBSCRIBED (RFC 9051 6.3.9.8, example 10).
    rev2: bool = False


def _in_order(names: Iterable[str]) -> list[str]:
    """INBOX first, then by name."""
    return sorted(names, key=lambda name: (name != "INBOX", name))


def _hierarchy(names: Iterable[str]) -> list[str]:
    """The names and every name above them, in order."""
    every = set()
    for name in names:
        every.add(name)
        every.update(parents(name))
    return _in_order(every)


def list_mailboxes(
    query: Query,
    folders: Collection[str],
    subscriptions: Collection[str],
    special_use: Mapping[str, str],
) -> list[Listed]:
    """The LIST responses for ``query`` over the user's ``folders`` and ``subscriptions``;
    ``special_use`` maps folder names to their RFC 6154 attribute."""
    tests = [pattern_matcher(query.reference, p) for p in query.patterns]

    def matched(name: str) -> bool:
        return any(test(name) for test in tests)

    subscribed = set(subscriptions)
    by_subscription = "SUBSCRIBED" in query.selection
    by_use = "SPECIAL-USE" in query.selection
    show_subscribed = by_subscription or "SUBSCRIBED" in query.returns
    children = "CHILDREN" in query.returns
    existing = set(folders)
    with_children = {parent for name in existing for parent in parents(name)}
    recursive = by_subscription and "RECURSIVEMATCH" in query.selection
    informed = set()
    if recursive:
        for name in subscribed:
            if not matched(name):
                informed.update(parent for parent in parents(name) if matched(parent))
    candidates = _hierarchy([*folders, *subscribed]) if by_subscription else _hierarchy(folders)
    found = []
    for name in candidates:
        is_folder = name in existing
        if not matched(name):
            continue
        if by_subscription and name not in subscribed and name not in informed:
            continue
        if by_use and name not in special_use:
            continue
        attributes: list[str] = []
        if show_subscribed and name in subscribed:
            attributes.append("\\Subscribed")
        has = name in with_children
        if not is_folder:
            gone = (by_subscription and name in subscribed) or query.rev2
            attributes.append("\\NonExistent" if gone else "\\Noselect")
        elif name in special_use:
            attributes.append(special_use[name])
        if children or (query.rev2 and not is_folder and has and not by_subscription):
            attributes.append("\\HasChildren" if has else "\\HasNoChildren")
        chosen = is_folder and (name in subscribed or not by_subscription)
        found.append(Listed(name, tuple(attributes), name in informed, chosen))
    return found


def lsub_mailboxes(
    reference: str, pattern: str, folders: Collection[str], subscriptions: Collection[str]
) -> list[Listed]:
    """The LSUB responses: subscribed names ``pattern`` matches, and the parents a ``%`` stops
    at above subscribed names; those not subscribed, and subscribed names without a folder,
    are ``\\Noselect``."""
    test = pattern_matcher(reference, pattern)
    subscribed = set(subscriptions)
    names: dict[str, bool] = {}
    for name in subscribed:
        if test(name):
            names[name] = True
        elif "%" in reference + pattern:
            for parent in parents(name):
                if test(parent):
                    names.setdefault(parent, parent in subscribed)
    listed = []
    for name in _in_order(names):
        selectable = names[name] and name in folders
        listed.append(Listed(name, () if selectable else ("\\Noselect",), with_status=selectable))
    return listed
