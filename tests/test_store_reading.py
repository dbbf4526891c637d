"""The store's reader of messages as listed (``IFolder.reader``): what IMAP and POP3 send
message octets with, and the seam that keeps every protocol away from where messages are kept."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from mailgw.store import MaildirStore, NoSuchMessage
from mailgw.store.interfaces import IListedReader
from mailgw.store.reading import NotCached

USER = "alice@example.test"
MESSAGE = b"Subject: hi\r\nFrom: a@example.test\r\n\r\n" + b"body line\r\n" * 50
PROTOCOLS = Path(__file__).parent.parent / "mailgw"


@pytest.fixture
def folder(tmp_path: Path):
    store = MaildirStore(tmp_path / "mail", tmp_path / "tmp", "mx.example.test")
    return store.folder(USER)


def _evict(folder) -> None:
    for subdir in ("new", "cur"):
        for path in (folder.path / subdir).iterdir():
            fd = os.open(path, os.O_RDONLY)
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def test_reads_a_message_as_listed(folder):
    folder.append(MESSAGE)
    (info,) = folder.messages()
    with folder.reader() as reader:
        assert IListedReader.providedBy(reader)
        assert reader.listed(info) == reader.whole(info) == MESSAGE
        assert reader.head(info).startswith(b"Subject: hi\r\nFrom: a@example.test\r\n\r\n")
        with reader.stream(info) as stream:
            assert stream.read() == MESSAGE


def test_a_renamed_or_removed_file_goes_through_the_folder(folder):
    folder.append(MESSAGE)
    (listed,) = folder.messages()
    folder.set_flags(listed.uid, {"\\Seen"})  # renamed: the listing names the old file
    with folder.reader() as reader:
        assert reader.listed(listed) is None
        assert reader.stream(listed) is None
        assert reader.whole(listed) == MESSAGE
        assert reader.head(listed).startswith(b"Subject: hi")
        folder.expunge([listed.uid])
        with pytest.raises(NoSuchMessage):
            reader.whole(listed)


def test_a_bare_lf_file_of_another_program_is_read_with_crlf(folder):
    (folder.path / "cur" / "1700000000.M1P1.other:2,S").write_bytes(b"Subject: lf\n\nbody\n")
    (info,) = folder.messages()
    with folder.reader() as reader:
        assert reader.listed(info) is None
        assert reader.whole(info) == b"Subject: lf\r\n\r\nbody\r\n"
        with pytest.raises(NotCached):
            reader.cached(info)


def test_cached_reads_never_wait_for_the_disk(folder):
    folder.append(MESSAGE)
    (info,) = folder.messages()
    with folder.reader() as reader:
        reader.whole(info)  # now in the page cache
        assert reader.cached(info) == MESSAGE
        assert reader.cached(info, 10) == MESSAGE[:10]
        assert reader.cached_head(info).startswith(b"Subject: hi")
        _evict(folder)  # (whether cached() then says NotCached is the kernel's matter)
        assert reader.whole(info) == MESSAGE


def test_a_reader_reopens_its_directories_after_close(folder):
    folder.append(MESSAGE)
    (info,) = folder.messages()
    reader = folder.reader()
    assert reader.whole(info) == MESSAGE
    reader.close()
    reader.close()
    assert reader.whole(info) == MESSAGE
    reader.close()


def _reads_paths(path: Path) -> list[str]:
    """What a module does that only the store may: open files, stat them, use a path."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "open":
                found.append(f"open() line {node.lineno}")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "os" and node.attr in {"open", "stat", "fstat", "listdir"}:
                found.append(f"os.{node.attr} line {node.lineno}")
        if isinstance(node, ast.Attribute) and node.attr in {"path", "subdir", "filename"}:
            if not (isinstance(node.value, ast.Name) and node.value.id == "os"):
                found.append(f".{node.attr} line {node.lineno}")
    return found


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_no_protocol_reads_a_path(protocol):
    """The store seam declares everything the protocols use (issue 11): IMAP, POP3 and SMTP
    reach messages only through IFolder and its IListedReader, never by a file name."""
    offences = {
        str(path.relative_to(PROTOCOLS)): found
        for path in sorted((PROTOCOLS / protocol).rglob("*.py"))
        if (found := _reads_paths(path))
    }
    assert offences == {}
