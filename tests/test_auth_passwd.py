"""The passwd-file line format, address canonicalisation and the password hash schemes."""

from __future__ import annotations

import argon2
import bcrypt
import pytest

from mailgw.auth import InvalidAddress
from mailgw.auth.hashing import (
    PlaintextRefused,
    UnusableHash,
    hash_password,
    resolve_scheme,
    verify,
)
from mailgw.auth.passwd import (
    PasswdEntry,
    canonical_address,
    format_line,
    format_text,
    parse_line,
    parse_text,
    split_scheme,
)

SAMPLE = (
    "# mailgw users\n"
    "\n"
    "alice@example.test:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\n"
    "  # indented comment\n"
    "bob@example.test:{BLF-CRYPT}$2y$05$abc:1000:1000::/home/bob:/bin/false:quota=1G x=a:b\n"
    "this line is not a user\n"
)


def test_round_trip_keeps_comments_blank_and_bad_lines() -> None:
    lines = parse_text(SAMPLE)
    assert format_text(lines) == SAMPLE
    assert [line.number for line in lines if line.entry] == [3, 5]
    assert [line.number for line in lines if line.error] == [6]


def test_all_dovecot_fields_parse_and_format_back() -> None:
    line = "bob@example.test:{BLF-CRYPT}$2y$05$abc:1000:1000::/home/bob:/bin/false:quota=1G x=a:b"
    entry = parse_line(line)
    assert entry == PasswdEntry(
        "bob@example.test",
        "{BLF-CRYPT}$2y$05$abc",
        ("1000", "1000", "", "/home/bob", "/bin/false", "quota=1G x=a:b"),
    )
    assert format_line(entry) == line
    assert parse_line(format_line(entry)) == entry


def test_comments_and_blank_lines_are_not_entries() -> None:
    assert parse_line("# x:y") is None
    assert parse_line("   ") is None
    assert parse_line("") is None


@pytest.mark.parametrize(
    "line", ["nocolon", "no-at-sign:{PLAIN}x", "a b@example.test:{PLAIN}x", ":{PLAIN}x"]
)
def test_bad_lines_are_refused(line: str) -> None:
    lines = parse_text(line + "\n")
    assert lines[0].entry is None and lines[0].error


def test_scheme_prefix_split() -> None:
    assert split_scheme("{argon2id}$argon2id$x") == ("ARGON2ID", "$argon2id$x")
    assert split_scheme("$2b$05$x") == (None, "$2b$05$x")
    assert split_scheme("{}x") == (None, "{}x")


def test_canonical_lower_cases_domain_and_local_part() -> None:
    assert canonical_address("  Bob.Smith@Example.ORG \n") == "bob.smith@example.org"


@pytest.mark.parametrize(
    "address",
    [
        "",
        "no-at-sign",
        "a@b@example.test",
        "a:b@example.test",
        "a b@example.test",
        "a\tb@example.test",
        "a\x00b@example.test",
        "a\x7fb@example.test",
        "a\u200bb@example.test",
        "@example.test",
        "alice@",
        ".@example.test",
        "..@example.test",
        ".alice@example.test",
        "alice@..",
        "alice@.example.test",
        "a/b@example.test",
        "alice@example.test/..",
        "a\\b@example.test",
        "#alice@example.test",
        "a" * 250 + "@example.test",
    ],
)
def test_unsafe_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidAddress):
        canonical_address(address)


def test_written_hash_is_dovecot_argon2id() -> None:
    field = hash_password(b"correct horse")
    assert field.startswith("{ARGON2ID}$argon2id$v=19$")
    scheme, stored = split_scheme(field)
    assert resolve_scheme(scheme, stored) == "ARGON2ID"
    assert verify("ARGON2ID", stored, b"correct horse")
    assert not verify("ARGON2ID", stored, b"correct horsE")


def test_argon2i_hash_is_read() -> None:
    stored = argon2.PasswordHasher(type=argon2.Type.I, memory_cost=8192).hash(b"pw")
    assert resolve_scheme("ARGON2I", stored) == "ARGON2I"
    assert verify("ARGON2I", stored, b"pw")
    assert not verify("ARGON2I", stored, b"pW")
    with pytest.raises(UnusableHash):
        resolve_scheme("ARGON2ID", stored)


@pytest.mark.parametrize("prefix", [b"$2b$", b"$2y$", b"$2a$"])
def test_bcrypt_variants_are_read(prefix: bytes) -> None:
    stored = (prefix + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))[4:]).decode()
    assert resolve_scheme("BLF-CRYPT", stored) == "BLF-CRYPT"
    assert resolve_scheme(None, stored) == "BLF-CRYPT"
    assert resolve_scheme("CRYPT", stored) == "BLF-CRYPT"
    assert verify("BLF-CRYPT", stored, b"pw")
    assert not verify("BLF-CRYPT", stored, b"px")


def test_bcrypt_uses_the_first_72_octets_like_crypt() -> None:
    password = b"x" * 72
    stored = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()
    assert verify("BLF-CRYPT", stored, password + b"ignored")
    assert not verify("BLF-CRYPT", stored, b"x" * 71)


# Test vectors from Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" specification.
SHA_VECTORS = [
    ("SHA256-CRYPT", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    (
        "SHA256-CRYPT",
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
    ),
    (
        "SHA512-CRYPT",
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcb"
        "YEdFCoEOfaS35inz1",
    ),
    (
        "SHA512-CRYPT",
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/Urj"
        "mM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
]


@pytest.mark.parametrize(("scheme", "stored"), SHA_VECTORS)
def test_sha_crypt_specification_vectors(scheme: str, stored: str) -> None:
    assert resolve_scheme(scheme, stored) == scheme
    assert verify(scheme, stored, b"Hello world!")
    assert not verify(scheme, stored, b"Hello world")


def test_plaintext_schemes_only_when_allowed() -> None:
    for scheme, stored in [("PLAIN", "pw"), ("CLEARTEXT", "pw"), ("PLAIN.B64", "cHc=")]:
        with pytest.raises(PlaintextRefused):
            resolve_scheme(scheme, stored)
        assert resolve_scheme(scheme, stored, allow_plaintext=True) == scheme
        assert verify(scheme, stored, b"pw")
        assert not verify(scheme, stored, b"pw2")


@pytest.mark.parametrize(
    ("scheme", "stored"),
    [
        ("MD5-CRYPT", "$1$salt$hash"),
        (None, "abJnggxhB/yWI"),  # Dovecot's default CRYPT (DES): not supported
        (None, "$6$saltstring$x"),  # no {SCHEME}: only $2 and $argon2 are inferred
        ("CRYPT", "abJnggxhB/yWI"),
        ("BLF-CRYPT", "$2b$05$short"),
        ("BLF-CRYPT", "$2b$31$" + "a" * 53),  # cost far beyond the limit
        ("ARGON2ID", "$argon2id$v=19$m=99999999,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"),
        ("SHA512-CRYPT", "$6$rounds=999999999$salt$" + "a" * 86),
        ("SHA256-CRYPT", SHA_VECTORS[2][1]),
    ],
)
def test_unusable_hashes_are_refused(scheme: str | None, stored: str) -> None:
    with pytest.raises(UnusableHash):
        resolve_scheme(scheme, stored)
