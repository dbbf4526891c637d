"""The passwd-file user database: what an administrator and a logging-in user see."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import argon2
import bcrypt
import pytest
from twisted.logger import formatEvent, globalLogPublisher

from mailgw.auth import InvalidAddress, NoSuchUser, PasswdFileUserDatabase, UserExists

ALICE = "alice@example.test"


@pytest.fixture
def log_lines():
    """Formatted twisted.logger events emitted during the test."""
    lines: list[str] = []

    def observer(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def _bcrypt_line(address: str, password: bytes, prefix: str = "$2y$") -> str:
    stored = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()
    return f"{address}:{{BLF-CRYPT}}{prefix}{stored[4:]}\n"


def _replace(path: Path, text: str) -> None:
    """Replace the file as an editor does: write a new file, rename it over the old one."""
    tmp = path.with_name(path.name + ".edit")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_added_user_is_written_as_argon2id_and_never_in_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    users = PasswdFileUserDatabase(path)
    users.add_user(ALICE, b"Sup3r-Secret-Pw")
    assert path.read_text().startswith(f"{ALICE}:{{ARGON2ID}}$argon2id$")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for file in tmp_path.iterdir():
        assert b"Sup3r-Secret-Pw" not in file.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd", "passwd.lock"]
    assert users.check_password(ALICE, b"Sup3r-Secret-Pw")
    assert not users.check_password(ALICE, b"sup3r-secret-pw")


def test_bcrypt_line_written_by_another_tool_logs_in(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(_bcrypt_line(ALICE, b"pw") + _bcrypt_line("bob@example.test", b"b", "$2b$"))
    users = PasswdFileUserDatabase(path)
    assert users.users() == [ALICE, "bob@example.test"]
    assert users.check_password(ALICE, b"pw")
    assert users.check_password("bob@example.test", b"b")
    assert not users.check_password(ALICE, b"b")


def test_argon2i_and_prefixless_hashes_log_in(tmp_path: Path) -> None:
    argon2i = argon2.PasswordHasher(type=argon2.Type.I, memory_cost=8192).hash(b"one")
    plain_bcrypt = bcrypt.hashpw(b"two", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "passwd"
    path.write_text(f"a@example.test:{{ARGON2I}}{argon2i}\nb@example.test:{plain_bcrypt}\n")
    users = PasswdFileUserDatabase(path)
    assert users.check_password("a@example.test", b"one")
    assert users.check_password("b@example.test", b"two")


def test_plaintext_scheme_refused_by_default(tmp_path: Path, log_lines: list) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"{ALICE}:{{PLAIN}}hunter2\n" + _bcrypt_line("bob@example.test", b"b"))
    users = PasswdFileUserDatabase(path)
    assert not users.exists(ALICE)
    assert not users.check_password(ALICE, b"hunter2")
    assert any("line 1" in line and "plaintext" in line for line in log_lines)
    assert not any("hunter2" in line for line in log_lines)

    allowed = PasswdFileUserDatabase(path, allow_plaintext_schemes=True)
    assert allowed.check_password(ALICE, b"hunter2")
    assert not allowed.check_password(ALICE, b"hunter3")


def test_unknown_scheme_user_exists_but_cannot_log_in(tmp_path: Path, log_lines: list) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"{ALICE}:{{MD5-CRYPT}}$1$salt$abcdefghijklmnopqrstuv\n")
    users = PasswdFileUserDatabase(path)
    assert users.exists(ALICE)
    assert not users.check_password(ALICE, b"anything")
    assert any("line 1" in line and "MD5-CRYPT" in line for line in log_lines)


def test_empty_password_field_means_mail_only(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"{ALICE}:\n")
    users = PasswdFileUserDatabase(path)
    assert users.exists(ALICE)
    assert not users.check_password(ALICE, b"")


def test_edits_take_effect_without_a_new_object(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(_bcrypt_line(ALICE, b"old"))
    users = PasswdFileUserDatabase(path)
    assert users.check_password(ALICE, b"old")

    _replace(path, _bcrypt_line(ALICE, b"new") + _bcrypt_line("bob@example.test", b"b"))
    assert users.exists("bob@example.test")
    assert users.check_password(ALICE, b"new")
    assert not users.check_password(ALICE, b"old")

    with path.open("a") as f:  # appended in place: the size changes
        f.write(_bcrypt_line("carol@example.test", b"c"))
    assert users.users() == [ALICE, "bob@example.test", "carol@example.test"]

    path.unlink()
    assert users.users() == []


def test_changes_by_another_writer_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    server_view = PasswdFileUserDatabase(path)
    assert not server_view.exists(ALICE)
    PasswdFileUserDatabase(path).add_user(ALICE, b"pw")  # as the admin command does
    assert server_view.exists(ALICE)
    assert server_view.check_password(ALICE, b"pw")


def test_bad_line_is_skipped_with_its_number_logged(tmp_path: Path, log_lines: list) -> None:
    path = tmp_path / "passwd"
    path.write_text(
        "# users\n"
        + _bcrypt_line(ALICE, b"pw")
        + "garbage without a colon\n"
        + "../etc@example.test:{ARGON2ID}$argon2id$x\n"
        + _bcrypt_line("bob@example.test", b"b")
    )
    users = PasswdFileUserDatabase(path)
    assert users.users() == [ALICE, "bob@example.test"]
    assert any("line 3" in line for line in log_lines)
    assert any("line 4" in line for line in log_lines)


@pytest.mark.parametrize(
    "broken",
    [
        os.urandom(64) + b"\xff\xfe\x00",  # binary garbage
        b"random words, no colon\nand more\n",  # not a passwd-file at all
    ],
)
def test_unparseable_file_keeps_last_good(tmp_path: Path, log_lines: list, broken: bytes) -> None:
    path = tmp_path / "passwd"
    path.write_text(_bcrypt_line(ALICE, b"pw"))
    users = PasswdFileUserDatabase(path)
    assert users.exists(ALICE)

    tmp = tmp_path / "new"
    tmp.write_bytes(broken)
    os.replace(tmp, path)
    assert users.check_password(ALICE, b"pw")
    assert any("keeping the last good version" in line for line in log_lines)
    logged = len(log_lines)
    assert users.exists(ALICE)
    assert len(log_lines) == logged, "an unchanged bad file is not re-read and re-logged"

    _replace(path, _bcrypt_line("bob@example.test", b"b"))
    assert users.users() == ["bob@example.test"]


def test_unreadable_file_keeps_last_good(tmp_path: Path, log_lines: list) -> None:
    path = tmp_path / "passwd"
    path.write_text(_bcrypt_line(ALICE, b"pw"))
    users = PasswdFileUserDatabase(path)
    assert users.exists(ALICE)
    path.unlink()
    path.mkdir()  # reading it fails with IsADirectoryError, as with a permission error
    assert users.check_password(ALICE, b"pw")
    assert any("cannot be read" in line for line in log_lines)
    with pytest.raises(OSError):
        users.add_user("bob@example.test", b"b")


def test_addresses_are_case_insensitive(tmp_path: Path) -> None:
    users = PasswdFileUserDatabase(tmp_path / "passwd")
    users.add_user("  Alice@Example.TEST ", b"pw")
    assert users.users() == [ALICE]
    assert users.canonical("ALICE@example.test") == ALICE
    assert users.exists("aLiCe@EXAMPLE.test")
    assert users.check_password("ALICE@EXAMPLE.TEST", b"pw")
    with pytest.raises(UserExists):
        users.add_user("alice@EXAMPLE.test", b"other")


def test_invalid_addresses_are_refused_everywhere(tmp_path: Path) -> None:
    users = PasswdFileUserDatabase(tmp_path / "passwd")
    for bad in ["../x@example.test", "a:b@example.test", "nobody", "a\r\nb@example.test"]:
        with pytest.raises(InvalidAddress):
            users.add_user(bad, b"pw")
        assert not users.exists(bad)
        assert not users.check_password(bad, b"pw")
    assert not (tmp_path / "passwd").exists() or users.users() == []


def test_password_change_and_removal_keep_the_rest_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    header = "# managed by hand and by mailgw\n\n"
    bob = "bob@example.test:{BLF-CRYPT}$2y$05$" + "b" * 53 + ":1000:1000::/home/bob::x=1\n"
    odd = "an unknown line kept as is\n"
    path.write_text(header + _bcrypt_line(ALICE, b"old") + odd + bob)
    users = PasswdFileUserDatabase(path)

    users.set_password(ALICE, b"new")
    text = path.read_text()
    assert text.startswith(header + f"{ALICE}:{{ARGON2ID}}$argon2id$")
    assert text.endswith(odd + bob)
    assert users.check_password(ALICE, b"new")
    assert not users.check_password(ALICE, b"old")

    users.remove_user(ALICE)
    assert path.read_text() == header + odd + bob
    assert not users.exists(ALICE)
    with pytest.raises(NoSuchUser):
        users.remove_user(ALICE)
    with pytest.raises(NoSuchUser):
        users.set_password(ALICE, b"pw")


def test_concurrent_writers_lose_no_user(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    addresses = [f"user{i}@example.test" for i in range(8)]
    errors: list = []

    def add(address: str) -> None:
        try:
            PasswdFileUserDatabase(path).add_user(address, b"pw")
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(a,)) for a in addresses]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert PasswdFileUserDatabase(path).users() == sorted(addresses)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_unknown_user_costs_as_much_as_a_wrong_password(tmp_path: Path) -> None:
    users = PasswdFileUserDatabase(tmp_path / "passwd")
    users.add_user(ALICE, b"pw")
    users.check_password("nobody@example.test", b"warm-up")

    def timed(address: str) -> float:
        start = time.perf_counter()
        for _ in range(3):
            assert not users.check_password(address, b"wrong")
        return time.perf_counter() - start

    wrong, unknown = timed(ALICE), timed("nobody@example.test")
    assert 0.5 < unknown / wrong < 2.0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")
def test_root_writes_leave_files_to_the_data_directory_owner(tmp_path: Path) -> None:
    """`mailgw user add` run by root keeps the passwd-file readable by the server's own user."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 65534, 65534)
    db = PasswdFileUserDatabase(data / "passwd")
    db.add_user("alice@example.test", b"pw")
    for name in ("passwd", "passwd.lock"):
        info = (data / name).stat()
        assert (info.st_uid, info.st_gid) == (65534, 65534), name
        assert stat.S_IMODE(info.st_mode) == 0o600
