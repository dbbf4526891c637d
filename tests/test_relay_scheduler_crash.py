"""SIGKILL of the real server (``twistd -n mailgw``) while it relays 100 queued messages to a
smarthost that accepts slowly: after a restart every message arrives, each exactly once except
those in flight at the kill."""

from __future__ import annotations

import asyncio
import re
import time

from mailgw_process import ServerProcess, write_config
from test_relay_client import Smarthost

from mailgw.relay.queue import OutboundQueue

COUNT = 100
#: [relay] concurrency_per_destination: at most this many messages are in flight at once.
CONCURRENCY = 4


def wait_for(condition, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigkill_while_relaying_loses_nothing_and_repeats_only_in_flight(tmp_path):
    smarthost = Smarthost()
    accept = smarthost.handle_DATA
    active = [0]

    async def slow_DATA(server, session, envelope):
        active[0] += 1
        try:  # cancelled when the client's connection dies
            await asyncio.sleep(0.03)
            return await accept(server, session, envelope)
        finally:
            active[0] -= 1

    smarthost.handle_DATA = slow_DATA
    extra = (
        f"\n[relay]\nsmarthost = 127.0.0.1:{smarthost.port}\nsmarthost_tls = none\n"
        f"concurrency_per_destination = {CONCURRENCY}\n"
    )
    config = write_config(tmp_path, services=("smtp",), extra=extra)
    queue = OutboundQueue(tmp_path / "data" / "queue")
    for number in range(COUNT):
        message = f"From: alice@example.test\r\nX-Seq: {number}\r\n\r\nmessage {number}\r\n"
        queue.enqueue(message.encode(), "alice@example.test", ["bob@remote.test"])
    server = ServerProcess(config)
    try:
        server.start()
        wait_for(lambda: len(smarthost.messages) >= COUNT // 3)
        server.kill()
        wait_for(lambda: active[0] == 0)  # DATA the dead process sent may still be accepted
        received_at_kill = len(smarthost.messages)
        left_at_kill = len(queue.entries())
        # Acknowledged by the smarthost but still queued: in flight when the process died.
        in_flight = received_at_kill + left_at_kill - COUNT
        print(f"at the kill: {received_at_kill} received, {left_at_kill} queued, {in_flight} twice")
        assert received_at_kill < COUNT and 0 <= in_flight <= CONCURRENCY
        server.start()
        wait_for(lambda: not queue.entries())
        wait_for(lambda: len(smarthost.messages) >= COUNT + in_flight, timeout=5)
    finally:
        server.kill()
        smarthost.close()
    numbers = [int(re.search(rb"X-Seq: (\d+)", m[2]).group(1)) for m in smarthost.messages]
    assert sorted(set(numbers)) == list(range(COUNT))
    assert len(numbers) - COUNT == in_flight  # only those in flight at the kill came twice
