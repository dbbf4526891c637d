"""Who receives mail sent to a local address: users, aliases, catch-alls, postmaster, subaddresses.

``Recipients.resolve(address)`` turns one envelope recipient of a local domain into the users
whose INBOX gets a copy, in this order:

1. an alias of the aliases file (``alias@domain: target, target``), expanded recursively; an
   alias wins over a user of the same name, as in Postfix's ``virtual_alias_maps``;
2. a user of the passwd-file;
3. with the detail of a subaddress removed (``user+detail@domain`` -> ``user@domain``, the
   separators are ``[mailgw] recipient_delimiter``), steps 1 and 2 again;
4. for ``postmaster@`` of any local domain, which RFC 5321 4.5.1 says must always be accepted:
   ``[mailgw] postmaster`` if set, else ``postmaster@`` of the first local domain;
5. the domain's catch-all (``@domain: target``).

Alias targets are local users, other aliases or subaddresses of either.  A target in a foreign
domain is refused when the file is loaded (mailgw does not relay mail yet); a local target that is
neither a user nor an alias is logged at load and skipped at delivery until it exists, because
users come and go without the aliases file changing.  Expansion stops at ``MAX_DEPTH`` levels and
never visits an alias twice, so a loop (also logged at load) cannot run away.

The aliases file is re-read when its ``os.stat`` signature changes, like the passwd-file; a line
that cannot be used is logged with its number and skipped, and a file that cannot be read keeps
the last good version in force.  This module knows nothing of SMTP or of the network.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from twisted.logger import Logger

from mailgw.auth.errors import InvalidAddress
from mailgw.auth.passwd import canonical_address

log = Logger()

#: How many aliases deep an expansion may go.
MAX_DEPTH = 10
#: The most users one recipient may expand to.
MAX_USERS = 1000


class UnknownRecipient(Exception):
    """No user receives mail for this address (SMTP: 550 5.1.1)."""


class PostmasterUnavailable(Exception):
    """``postmaster@`` of a local domain has nobody to receive it: a configuration error."""


@dataclass(frozen=True)
class AliasTable:
    """One loaded version of an aliases file: ``alias -> targets``, catch-alls keyed ``@domain``."""

    aliases: dict = field(default_factory=dict)
    #: (st_dev, st_ino, st_size, st_mtime_ns) of the file read; None for no file.
    signature: tuple | None = None


def parse_aliases(text: str, domains: frozenset) -> tuple[dict, list]:
    """Parse an aliases file's text: return ``({alias: (target, ...)}, [(line, error), ...])``.

    Keys and targets are canonical (lower-cased) addresses; a catch-all is keyed ``@domain``.
    Lines in error, and targets outside ``domains``, are left out and reported."""
    aliases: dict = {}
    errors: list = []
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, colon, rest = stripped.partition(":")
        if not colon:
            errors.append((number, "no ':' after the alias"))
            continue
        try:
            key = _alias_key(name.strip(), domains)
        except ValueError as error:
            errors.append((number, str(error)))
            continue
        if key in aliases:
            errors.append((number, f"duplicate alias {key}, the first one counts"))
            continue
        targets = []
        for item in rest.split(","):
            target = item.strip()
            if not target:
                continue
            try:
                target = canonical_address(target)
            except InvalidAddress as error:
                errors.append((number, f"target {target!r} skipped: {error}"))
                continue
            if target.partition("@")[2] not in domains:
                problem = "not in a local domain (mailgw does not relay mail yet)"
                errors.append((number, f"target {target} skipped: {problem}"))
                continue
            if target not in targets:
                targets.append(target)
        if not targets:
            errors.append((number, f"alias {key} has no usable target; line skipped"))
            continue
        aliases[key] = tuple(targets)
    return aliases, errors


def _alias_key(name: str, domains: frozenset) -> str:
    """The canonical key of an alias: ``local@domain``, or ``@domain`` for a catch-all."""
    if name.startswith("@"):
        domain = name[1:].lower()
        key = name.lower()
    else:
        try:
            key = canonical_address(name)
        except InvalidAddress as error:
            raise ValueError(f"bad alias {name!r}: {error}") from None
        domain = key.partition("@")[2]
    if domain not in domains:
        raise ValueError(f"alias {name!r} is not in a local domain")
    return key


class AliasFile:
    """The aliases file in force, re-read whenever it changes; no file means no aliases."""

    def __init__(self, path: Path | None, domains: frozenset, users: object) -> None:
        self.path = Path(path) if path is not None else None
        self.domains = frozenset(domains)
        self.users = users
        self._lock = threading.Lock()
        self._table = AliasTable()
        self._tried: object = None
        self._loaded_once = False

    def table(self) -> AliasTable:
        """The aliases as the file is now (reloaded if its stat signature changed)."""
        if self.path is None:
            return self._table
        try:
            st = os.stat(self.path)
            signature: object = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            signature = None
        except OSError as error:
            signature = ("error", str(error))
        with self._lock:
            if not self._loaded_once or signature != self._tried:
                self._loaded_once = True
                self._tried = signature
                self._load(signature)
            return self._table

    def _load(self, signature: object) -> None:
        """Read the file (the lock is held); keep the last good table when it is unusable."""
        path = str(self.path)
        if signature is None:
            if self._table.signature is not None:
                log.warn("aliases file {path} is gone: no aliases", path=path)
            self._table = AliasTable()
            return
        try:
            text = self.path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            log.error(
                "aliases file {path} cannot be read: {error}; keeping the last good version",
                path=path,
                error=str(error),
            )
            return
        aliases, errors = parse_aliases(text, self.domains)
        for number, error in errors:
            log.error(
                "aliases file {path} line {number}: {error}", path=path, number=number, error=error
            )
        for problem in _dangling_and_loops(aliases, self.users):
            log.error("aliases file {path}: {problem}", path=path, problem=problem)
        self._table = AliasTable(aliases, signature)
        log.info("aliases file {path} loaded: {count} aliases", path=path, count=len(aliases))


def _dangling_and_loops(aliases: dict, users: object) -> list[str]:
    """Describe targets that match no user or alias, and aliases that lead back to themselves."""
    problems = []
    for key, targets in aliases.items():
        for target in targets:
            if target not in aliases and not users.exists(target):
                problems.append(
                    f"{key}: target {target} is not a local user or alias; skipped until it is"
                )
    for key in aliases:
        path = _cycle_from(key, aliases)
        if path:
            problems.append("alias loop " + " -> ".join(path) + " (followed once)")
    return problems


def _cycle_from(start: str, aliases: dict) -> list[str]:
    """A path of aliases from ``start`` back to ``start``, or [] if there is none."""
    stack = [(start, [start])]
    seen = set()
    while stack:
        key, path = stack.pop()
        for target in aliases.get(key, ()):
            if target == start:
                return [*path, start]
            if target in aliases and target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return []


class Recipients:
    """Resolves local recipients to users; see the module docstring for the rules.

    ``domains`` are the local domains in configuration order (the first one is the home of a
    domain-less ``postmaster``)."""

    def __init__(
        self,
        users: object,
        domains: tuple,
        aliases: AliasFile | None = None,
        delimiter: str = "+",
        postmaster: str | None = None,
    ) -> None:
        self.users = users
        self.domains = frozenset(domains)
        self.aliases = aliases if aliases is not None else AliasFile(None, domains, users)
        self.delimiter = delimiter
        self.postmaster = postmaster
        #: The domain a domain-less ``postmaster`` belongs to: the first local one.
        self.first_domain = domains[0]

    def check(self) -> None:
        """Load the aliases file now, and log every local domain whose postmaster@ has nobody."""
        for domain in sorted(self.domains):
            try:
                self.resolve(f"postmaster@{domain}")
            except PostmasterUnavailable:
                continue

    def is_local(self, domain: str) -> bool:
        """Is mail for ``domain`` delivered here?"""
        return domain.lower() in self.domains

    def resolve(self, address: str) -> tuple[str, ...]:
        """The users (canonical, sorted) that get a copy of mail for this local address.

        A domain-less ``postmaster`` means ``postmaster@`` the first local domain.  Raise
        UnknownRecipient, or PostmasterUnavailable when postmaster@ has nobody to go to."""
        if "@" not in address and address.lower() == "postmaster":
            address = f"postmaster@{self.first_domain}"
        try:
            address = canonical_address(address)
        except InvalidAddress:
            raise UnknownRecipient(address) from None
        local, _, domain = address.partition("@")
        table = self.aliases.table().aliases
        users = self._expand(address, table) or self._expand(self._base(address), table)
        if not users and local == "postmaster":
            users = self._postmaster(domain, table)
        if not users and f"@{domain}" in table:
            users = self._expand_targets(table[f"@{domain}"], table, 1, set())
        if users:
            return tuple(sorted(users))
        if local == "postmaster":
            log.error(
                "Mail for {address} refused for now: nobody receives it. Add a user or an "
                "alias for it, or set [mailgw] postmaster (RFC 5321 requires postmaster@)",
                address=address,
            )
            raise PostmasterUnavailable(address)
        raise UnknownRecipient(address)

    def may_send_as(self, user: str, address: str) -> bool:
        """May the logged-in ``user`` use ``address`` as envelope sender?

        Yes for the user's own address and its subaddresses, and for an alias (not a catch-all)
        that delivers to the user."""
        try:
            user = canonical_address(user)
            address = canonical_address(address)
        except InvalidAddress:
            return False
        table = self.aliases.table().aliases
        for candidate in dict.fromkeys((address, self._base(address))):
            if candidate == user or (candidate in table and user in self._expand(candidate, table)):
                return True
        return False

    def _postmaster(self, domain: str, table: dict) -> set:
        """Who gets postmaster@domain when it is no user or alias of its own."""
        if self.postmaster:
            return self._expand(self.postmaster, table) or self._expand(
                self._base(self.postmaster), table
            )
        if domain != self.first_domain:
            return self._expand(f"postmaster@{self.first_domain}", table)
        return set()

    def _base(self, address: str) -> str:
        """The address without the detail of a subaddress (itself when it has none)."""
        local, _, domain = address.partition("@")
        cut = min((local.find(mark) for mark in self.delimiter if mark in local), default=-1)
        if cut <= 0:
            return address
        return f"{local[:cut]}@{domain}"

    def _expand(self, address: str, table: dict, depth: int = 0, seen: set | None = None) -> set:
        """Users for one address: an alias expanded, or the user itself; empty if neither."""
        seen = set() if seen is None else seen
        if address in table and address not in seen:
            seen.add(address)
            return self._expand_targets(table[address], table, depth + 1, seen)
        if self.users.exists(address):
            return {address}
        return set()

    def _expand_targets(self, targets: tuple, table: dict, depth: int, seen: set) -> set:
        if depth > MAX_DEPTH:
            log.error("alias expansion deeper than {depth} levels stopped", depth=MAX_DEPTH)
            return set()
        users: set = set()
        for target in targets:
            found = self._expand(target, table, depth, seen)
            if not found and target not in table:
                found = self._expand(self._base(target), table, depth, seen)
            users |= found
            if len(users) > MAX_USERS:
                log.error("alias expansion over {count} users stopped", count=MAX_USERS)
                return set()
        return users


class CaptureAll:
    """Testing only (``mailgw.testing``, a capture server): every address of every domain gets
    its own copy, in the mailbox of that exact address, and any sender is allowed.

    No configuration key builds it: only ``mailgw.testing.MailServer(catch_all=True)`` does."""

    def __init__(self, domains: tuple) -> None:
        self.domains = frozenset(domains)
        self.first_domain = domains[0]

    def check(self) -> None:
        """Nothing to check."""

    def is_local(self, domain: str) -> bool:
        """Every domain is delivered here."""
        return True

    def resolve(self, address: str) -> tuple[str, ...]:
        """The address itself (a domain-less one in the first domain); UnknownRecipient if bad."""
        if "@" not in address:
            address = f"{address}@{self.first_domain}"
        try:
            return (canonical_address(address),)
        except InvalidAddress:
            raise UnknownRecipient(address) from None

    def may_send_as(self, user: str, address: str) -> bool:
        """Any sender is allowed."""
        return True
