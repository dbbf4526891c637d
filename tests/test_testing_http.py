"""The HTTP API's long poll in-process: several waiters, clients that give up, and stopping.

A MailServer in thread mode with an HttpApi on the same reactor; clients are urllib and raw
sockets from test threads.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from twisted.internet import reactor

from mailgw.testing import MailServer
from mailgw.testing.http import HttpApi
from tests.conftest import in_reactor


@pytest.fixture
def served():
    """A started MailServer (SMTP only) and its HttpApi; both stopped afterwards."""
    server = MailServer(services=("smtp",)).start()
    api = HttpApi(server, reactor)
    in_reactor(api.start)
    yield server, api
    in_reactor(api.stop)
    server.stop()


def post(url: str, body: dict) -> tuple[int, dict]:
    """POST ``body`` as JSON; the status and the JSON answer."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def in_thread(fn, *args) -> tuple[threading.Thread, list]:
    """Run ``fn(*args)`` in a thread; the thread and a list that receives the result."""
    results: list = []
    thread = threading.Thread(target=lambda: results.append(fn(*args)), daemon=True)
    thread.start()
    return thread, results


def wait_until(condition, timeout: float = 5.0) -> None:
    """Poll ``condition`` (a test helper, not something users do) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_one_delivery_answers_every_waiting_client(served):
    server, api = served
    waiters = [
        in_thread(post, api.url + "wait", {"address": "ann@example.test", "timeout": 10})
        for _ in range(3)
    ]
    wait_until(lambda: len(server._watchers) == 3)
    uid = server.deliver("ann@example.test", b"Subject: for all\r\n\r\nhi\r\n")
    for thread, results in waiters:
        thread.join(5)
        [(status, answer)] = results
        assert status == 200
        assert [m["uid"] for m in answer["messages"]] == [uid]


def test_count_waits_for_that_many_messages(served):
    server, api = served
    thread, results = in_thread(post, api.url + "wait", {"count": 2, "timeout": 10})
    wait_until(lambda: server._watchers)
    server.deliver("bo@example.test", b"Subject: one\r\n\r\n1\r\n")
    time.sleep(0.2)
    assert results == []  # one of two: still waiting
    server.deliver("bo@example.test", b"Subject: two\r\n\r\n2\r\n")
    thread.join(5)
    [(status, answer)] = results
    assert status == 200
    assert [m["subject"] for m in answer["messages"]] == ["one", "two"]


def test_a_client_that_hangs_up_stops_its_wait(served):
    server, api = served
    request = json.dumps({"timeout": 30}).encode()
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as client:
        client.sendall(
            b"POST /wait HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(request), request)
        )
        wait_until(lambda: server._watchers)
    wait_until(lambda: not server._watchers)


def test_stopping_the_api_answers_waiting_clients_503(served):
    server, api = served
    thread, results = in_thread(post, api.url + "wait", {"timeout": 30})
    wait_until(lambda: server._watchers)
    started = time.monotonic()
    in_reactor(api.stop)
    thread.join(5)
    assert time.monotonic() - started < 2
    [(status, answer)] = results
    assert status == 503
    assert "stopping" in answer["error"]
    assert not server._watchers
