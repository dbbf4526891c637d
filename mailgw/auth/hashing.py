"""Password hashes in Dovecot's ``{SCHEME}hash`` notation: writing ARGON2ID, reading several.

Written: ``{ARGON2ID}`` followed by argon2-cffi's ``$argon2id$...`` string, as Dovecot writes it.
Read: ARGON2ID, ARGON2I, BLF-CRYPT (bcrypt ``$2y$``/``$2b$``/``$2a$``), SHA512-CRYPT and
SHA256-CRYPT (``$6$``/``$5$``, computed here without the deprecated ``crypt`` module), and the
plaintext schemes PLAIN/CLEAR/CLEARTEXT (optionally ``.B64``/``.BASE64``/``.HEX``) only when
the caller allows them.  A hash without a scheme is Dovecot's default CRYPT, which is refused
(as is an explicit ``{CRYPT}``) unless it is recognisably bcrypt (``$2``) or Argon2
(``$argon2``).

mailgw writes Argon2id with Dovecot's parameters: time cost 3, 64 MiB, parallelism 1, which is
what ``doveadm pw -s ARGON2ID`` (Dovecot 2.3.19, libsodium) writes (``m=65536,t=3,p=1``), so a
hash costs the same whichever of the two wrote it.  Measured here (2-core AMD EPYC, argon2-cffi
25.1, other work running): one verification takes 165 ms on one core, and two threads verify
8.9 a second where four verify 9.4, so two threads already use both cores and more only add
64 MiB each.  argon2-cffi's own default (RFC 9106's second recommendation: t=3, 64 MiB, p=4) costs
the same memory, took 143 ms and gave 9.4 a second with two or four threads: its four lanes run
on four threads per hash, which on two cores buy little and contend with the other logins.
The login cost is paid once an hour per password, not at every login, thanks to
``mailgw.auth.cost.CredentialsCache``; at most ``[auth] hash_threads`` hashes run at once.

Every comparison is constant-time (the hash libraries' own, or ``hmac.compare_digest``).  Stored
hashes whose cost would make one login take minutes are refused, so an edited file cannot turn
logins into a denial of service.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError

#: The scheme mailgw writes.
WRITE_SCHEME = "ARGON2ID"

#: Schemes that store the password itself; refused unless explicitly allowed.
PLAINTEXT_SCHEMES = frozenset({"PLAIN", "CLEAR", "CLEARTEXT"})

#: Schemes that can be verified when found in the file.
HASH_SCHEMES = frozenset({"ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT"})

#: Cost limits on stored hashes (memory in KiB for Argon2, log2 rounds for bcrypt).
MAX_ARGON2_MEMORY_KIB = 1024 * 1024
MAX_ARGON2_TIME_COST = 64
MAX_ARGON2_PARALLELISM = 64
MAX_BCRYPT_COST = 16
MAX_SHA_CRYPT_ROUNDS = 1_000_000

#: bcrypt uses the first 72 octets of a password, as libc's crypt() and Dovecot do.
BCRYPT_MAX_PASSWORD = 72

#: Argon2id parameters mailgw writes: Dovecot's (see the module docstring for the figures).
ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 64 * 1024
ARGON2_PARALLELISM = 1

_hasher = argon2.PasswordHasher(
    time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM
)
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_SHA_CRYPT = re.compile(r"\$([56])\$(?:rounds=(\d{1,10})\$)?([^$:\n]*)\$([./0-9A-Za-z]+)")
_SHA_HASH_LENGTH = {"5": 43, "6": 86}
_ENCODINGS = {"B64": "base64", "BASE64": "base64", "HEX": "hex"}

_dummy_lock = threading.Lock()
_dummy_hash: list[str] = []


class UnusableHash(ValueError):
    """A stored password cannot be verified: unknown scheme, malformed hash or too costly."""


class PlaintextRefused(UnusableHash):
    """A stored password uses a plaintext scheme and plaintext schemes are not allowed."""


def hash_password(password: bytes) -> str:
    """Return the password field mailgw writes: ``{ARGON2ID}$argon2id$v=19$...``."""
    return "{" + WRITE_SCHEME + "}" + _hasher.hash(password)


def _plaintext_base(scheme: str) -> tuple[str, str | None]:
    """Split ``PLAIN.B64`` into ``("PLAIN", "base64")``."""
    base, _, encoding = scheme.partition(".")
    return base, _ENCODINGS.get(encoding) if encoding else None


def is_plaintext_scheme(scheme: str) -> bool:
    """Does this scheme store the password itself (with or without an encoding suffix)?"""
    return _plaintext_base(scheme)[0] in PLAINTEXT_SCHEMES


def resolve_scheme(scheme: str | None, stored: str, allow_plaintext: bool = False) -> str:
    """Return the scheme to verify ``stored`` with; raise UnusableHash or PlaintextRefused.

    ``scheme`` is the upper-cased name from ``{SCHEME}``, or None when the field had no prefix
    (Dovecot's default, CRYPT: ``$2...`` is taken as BLF-CRYPT and ``$argon2...`` as Argon2).
    The hash is checked for form and cost, so a bad line is reported when the file is loaded.
    """
    if scheme in (None, "CRYPT"):
        if stored.startswith("$argon2id$"):
            scheme = "ARGON2ID"
        elif stored.startswith("$argon2i$"):
            scheme = "ARGON2I"
        elif stored.startswith("$2"):
            scheme = "BLF-CRYPT"
        else:
            raise UnusableHash(
                "CRYPT (the default without a {SCHEME} prefix) is only supported "
                "for bcrypt ($2...) and Argon2 ($argon2...) hashes"
            )
    if is_plaintext_scheme(scheme):
        if not allow_plaintext:
            raise PlaintextRefused(f"plaintext scheme {{{scheme}}} is not allowed")
        base, encoding = _plaintext_base(scheme)
        if scheme != base and encoding is None:
            raise UnusableHash(f"unknown encoding in scheme {{{scheme}}}")
        _decode_plaintext(scheme, stored)
        return scheme
    if scheme not in HASH_SCHEMES:
        raise UnusableHash(f"unknown or unsupported scheme {{{scheme}}}")
    _check_hash(scheme, stored)
    return scheme


def _check_hash(scheme: str, stored: str) -> None:
    """Raise UnusableHash unless ``stored`` is a well-formed, affordable hash of ``scheme``."""
    if scheme in ("ARGON2ID", "ARGON2I"):
        prefix = "$argon2id$" if scheme == "ARGON2ID" else "$argon2i$"
        if not stored.startswith(prefix):
            raise UnusableHash(f"{{{scheme}}} hash does not start with {prefix}")
        try:
            params = argon2.extract_parameters(stored)
        except InvalidHashError:
            raise UnusableHash(f"malformed {{{scheme}}} hash") from None
        if (
            params.memory_cost > MAX_ARGON2_MEMORY_KIB
            or params.time_cost > MAX_ARGON2_TIME_COST
            or params.parallelism > MAX_ARGON2_PARALLELISM
        ):
            raise UnusableHash(f"{{{scheme}}} hash parameters exceed mailgw's cost limits")
    elif scheme == "BLF-CRYPT":
        match = _BCRYPT.fullmatch(stored)
        if match is None:
            raise UnusableHash("malformed {BLF-CRYPT} hash")
        if not 4 <= int(match.group(1)) <= MAX_BCRYPT_COST:
            raise UnusableHash(f"{{BLF-CRYPT}} cost outside 4..{MAX_BCRYPT_COST}")
    else:
        _parse_sha_crypt(scheme, stored)


def _parse_sha_crypt(scheme: str, stored: str) -> tuple[int, bytes, str]:
    """Return (rounds, salt, hash) of a ``$5$``/``$6$`` string; raise UnusableHash."""
    match = _SHA_CRYPT.fullmatch(stored)
    wanted = "6" if scheme == "SHA512-CRYPT" else "5"
    if match is None or match.group(1) != wanted:
        raise UnusableHash(f"malformed {{{scheme}}} hash")
    rounds = 5000 if match.group(2) is None else int(match.group(2))
    if rounds > MAX_SHA_CRYPT_ROUNDS:
        raise UnusableHash(f"{{{scheme}}} rounds exceed {MAX_SHA_CRYPT_ROUNDS}")
    if len(match.group(4)) != _SHA_HASH_LENGTH[wanted]:
        raise UnusableHash(f"malformed {{{scheme}}} hash")
    return max(rounds, 1000), match.group(3).encode()[:16], match.group(4)


def _decode_plaintext(scheme: str, stored: str) -> bytes:
    """The password a plaintext scheme stores; raise UnusableHash if it does not decode."""
    encoding = _plaintext_base(scheme)[1]
    try:
        if encoding == "base64":
            return base64.b64decode(stored, validate=True)
        if encoding == "hex":
            return bytes.fromhex(stored)
    except (binascii.Error, ValueError):
        raise UnusableHash(f"{{{scheme}}} value does not decode") from None
    return stored.encode()


def verify(scheme: str, stored: str, password: bytes) -> bool:
    """Does ``password`` match ``stored``?  ``scheme`` comes from ``resolve_scheme``.

    Blocking and deliberately slow for the real hashes: call it from a thread.
    """
    try:
        if scheme in ("ARGON2ID", "ARGON2I"):
            return _hasher.verify(stored, password)
        if scheme == "BLF-CRYPT":
            return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], stored.encode())
        if scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
            rounds, salt, expected = _parse_sha_crypt(scheme, stored)
            digest = hashlib.sha512 if scheme == "SHA512-CRYPT" else hashlib.sha256
            return hmac.compare_digest(sha_crypt(digest, password, salt, rounds), expected)
        return hmac.compare_digest(_decode_plaintext(scheme, stored), password)
    except (VerificationError, InvalidHashError, UnusableHash, ValueError):
        return False


def verify_dummy(password: bytes) -> None:
    """Spend the time of a real ARGON2ID verification, for an unknown user."""
    with _dummy_lock:
        if not _dummy_hash:
            _dummy_hash.append(_hasher.hash(b"mailgw dummy password"))
    verify("ARGON2ID", _dummy_hash[0], password)


# SHA-crypt, from Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" specification.

_CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SHA256_ORDER = (
    (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
    (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29),
)  # fmt: skip
_SHA512_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54),
    (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60),
    (40, 61, 19), (62, 20, 41),
)  # fmt: skip


def _b64_24bit(b2: int, b1: int, b0: int, count: int) -> str:
    """Encode three bytes as ``count`` crypt-alphabet characters, least significant first."""
    word = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(count):
        out.append(_CRYPT_ALPHABET[word & 0x3F])
        word >>= 6
    return "".join(out)


def _repeat_to(block: bytes, length: int) -> bytes:
    """``block`` repeated and cut to ``length`` octets."""
    return (block * (length // len(block) + 1))[:length]


def sha_crypt(digest, password: bytes, salt: bytes, rounds: int) -> str:
    """The hash part of SHA-crypt (``$5$`` with sha256, ``$6$`` with sha512), as crypt() gives."""
    size = digest().digest_size
    plen = len(password)
    alternate = digest(password + salt + password).digest()
    context = digest(password + salt)
    context.update(_repeat_to(alternate, plen) if plen else b"")
    length = plen
    while length:
        context.update(alternate if length & 1 else password)
        length >>= 1
    result = context.digest()
    p_bytes = _repeat_to(digest(password * plen).digest(), plen) if plen else b""
    s_bytes = _repeat_to(digest(salt * (16 + result[0])).digest(), len(salt)) if salt else b""
    for i in range(rounds):
        context = digest(p_bytes if i & 1 else result)
        if i % 3:
            context.update(s_bytes)
        if i % 7:
            context.update(p_bytes)
        context.update(result if i & 1 else p_bytes)
        result = context.digest()
    if size == 32:
        encoded = [_b64_24bit(result[a], result[b], result[c], 4) for a, b, c in _SHA256_ORDER]
        encoded.append(_b64_24bit(0, result[31], result[30], 3))
    else:
        encoded = [_b64_24bit(result[a], result[b], result[c], 4) for a, b, c in _SHA512_ORDER]
        encoded.append(_b64_24bit(0, 0, result[63], 2))
    return "".join(encoded)
