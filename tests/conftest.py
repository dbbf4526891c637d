"""Shared fixtures: one real Twisted reactor in a background thread, real servers on loopback.

Tests talk to the servers with blocking clients (smtplib, poplib, imaplib, raw sockets) from the
test thread; everything that touches Twisted runs in the reactor thread through
``blockingCallFromThread``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString

from mailgw.config import Config
from mailgw.context import GuardSettings
from mailgw.testing.server import ReactorThread


def in_reactor(fn, *args, **kwargs):
    """Run ``fn`` in the reactor thread and return its (Deferred's) result.

    The reactor thread is mailgw.testing's own (started on first use), so that the suite and any
    MailServer it starts share one running reactor."""
    return ReactorThread.call(functools.partial(fn, *args, **kwargs))


def reactor_thread_alive() -> bool:
    """Is the shared reactor thread still running (no test may have killed it)?"""
    return ReactorThread.thread is not None and ReactorThread.thread.is_alive()


#: Guard settings for tests: no delays, so failures are cheap; still counts failures.
FAST_GUARD = GuardSettings(delay_start=0.0, delay_max=0.0, max_failures=1000, block_seconds=1.0)


def make_config(data_dir: Path, **overrides) -> Config:
    """A Config for an in-process test server on ``data_dir``: plaintext allowed, no guard delay."""
    base = Config(
        data_dir=data_dir,
        hostname="mx.example.test",
        domains=("example.test", "localhost"),
        allow_plaintext=True,
        guard=FAST_GUARD,
    )
    return dataclasses.replace(base, **overrides)


class LiveServer:
    """A ServerContext over a temporary data directory, and listeners started on demand."""

    def __init__(self, config: Config) -> None:
        from mailgw.service import build_context

        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.context = in_reactor(build_context, config, reactor)
        self._ports: list = []

    @property
    def store(self):
        """The IMailStore."""
        return self.context.store

    def add_user(self, address: str, password: str = "secret") -> None:
        """Add a user to the passwd-file."""
        self.context.users.add_user(address, password.encode())

    def listen(self, make_factory, *args, **kwargs) -> int:
        """Start ``make_factory(context, ...)`` on an ephemeral loopback port; return the port."""

        def start():
            factory = make_factory(self.context, *args, **kwargs)
            endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
            return endpoint.listen(factory)

        port = in_reactor(start)
        self._ports.append(port)
        return port.getHost().port

    def close(self) -> None:
        """Stop every listener started here."""
        for port in self._ports:
            in_reactor(port.stopListening)
        self._ports.clear()


def stored(server: LiveServer, address: str) -> list[bytes]:
    """Every message in the user's INBOX, as stored."""
    inbox = server.store.folder(address)
    out = []
    for info in inbox.messages():
        with inbox.open_message(info.uid) as handle:
            out.append(handle.read())
    return out


def without_trace(message: bytes) -> bytes:
    """The message without the Return-Path and (folded) Received lines mailgw put on top."""
    assert message.startswith(b"Return-Path: <")
    while message.startswith((b"Return-Path:", b"Received:", b"\t")):
        message = message.split(b"\r\n", 1)[1]
    return message


@pytest.fixture
def server(tmp_path: Path):
    """A LiveServer with plaintext login allowed and no login delay."""
    srv = LiveServer(make_config(tmp_path / "data"))
    yield srv
    srv.close()
