"""The HTTP JSON API of ``mailgw testserver``: drive a MailServer from any language.

It listens on ``127.0.0.1`` only, at an ephemeral port, on the MailServer's own reactor, and
offers the verbs of the Python API:

=========================================  ==============================================
``GET /``                                  the endpoints (as ``mailgw testserver --json``)
``GET /messages?address=&folder=``         the captured messages' metadata, oldest first
``GET /messages/ADDRESS/FOLDER/UID``       one message, raw (``message/rfc822``); its
                                           metadata and base64 raw with ``?format=json``
``POST /wait``                             ``{count, timeout, ...match}``: a long poll; 200
                                           with the messages as soon as there are
                                           ``count``, 408 when ``timeout`` passes first
``POST /users``                            ``{address, password}``
``POST /deliver``                          ``{address, message | message_base64, folder,
                                           flags}`` -> ``{uid}``
``POST /clear``                            remove every message and fault
``POST /faults``                           ``{protocol, step, reply, match, times, drop,
                                           delay}`` -> ``{id}``
``GET /faults``                            the faults still in force, with their hits
``DELETE /faults``                         remove every fault
=========================================  ==============================================

Bodies and answers are JSON objects; every error is ``{"error": "..."}`` with a 4xx status.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from mailgw.config import SERVICES
from mailgw.store.interfaces import StoreError
from mailgw.testing.faults import Fault
from mailgw.testing.server import CapturedMessage, MailServer

#: The largest request body accepted, in octets (a 25 MiB message, base64-encoded, fits).
MAX_BODY = 40 * 1024 * 1024
#: The longest ``timeout`` a ``POST /wait`` may ask for, in seconds.
MAX_WAIT = 600.0
#: ``POST /wait`` keys that are not match criteria.
_WAIT_KEYS = ("count", "timeout")
#: The ``POST /faults`` keys, as ``MailServer.fault`` takes them.
_FAULT_KEYS = ("protocol", "step", "reply", "match", "times", "drop", "delay")


class ApiError(Exception):
    """A request the API refuses: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def describe(server: MailServer, http_url: str | None = None) -> dict[str, Any]:
    """The endpoints of a started ``server`` (and the API's URL), as ``--json`` prints them."""
    info: dict[str, Any] = {"host": server.host}
    for name in SERVICES:
        info[f"{name}_port"] = getattr(server, f"{name}_port")
    info["cafile"] = str(server.cafile)
    info["data_dir"] = str(server.data_dir)
    if http_url is not None:
        info["http_url"] = http_url
    return info


def message_metadata(message: CapturedMessage) -> dict[str, Any]:
    """What the API tells of one message: where it is, its envelope and its main headers."""
    return {
        "address": message.address,
        "folder": message.folder,
        "uid": message.uid,
        "envelope_from": message.envelope_from,
        "envelope_to": list(message.envelope_to),
        "subject": _header(message, "Subject"),
        "from": _header(message, "From"),
        "to": _header(message, "To"),
        "message_id": _header(message, "Message-ID"),
        "size": len(message.raw),
    }


def _header(message: CapturedMessage, name: str) -> str | None:
    value = message.get(name)
    return None if value is None else str(value)


class ApiResource(Resource):
    """Every route of the API, dispatched by path and method."""

    isLeaf = True

    def __init__(self, server: MailServer, url: Callable[[], str]) -> None:
        super().__init__()
        self.server = server
        self._url = url
        #: Faults added through the API, by the id handed out.
        self._faults: dict[int, Fault] = {}
        self._next_fault = 1
        #: Long polls still waiting; cancelled by ``cancel_waits``.
        self._waits: set[Deferred] = set()

    def render(self, request: Request) -> bytes | int:
        """Answer ``request``: at once, or later (NOT_DONE_YET) for a long poll."""
        try:
            handler = self._route(request)
            result = handler(request)
        except ApiError as error:
            return _error(request, error.status, str(error))
        except (ValueError, StoreError) as error:  # refused by the MailServer or the store
            return _error(request, 400, str(error))
        if not isinstance(result, Deferred):
            return _json(request, 200, result)
        self._waits.add(result)
        request.notifyFinish().addErrback(lambda _: result.cancel())
        result.addBoth(self._finish_later, request, result)
        return NOT_DONE_YET

    def cancel_waits(self) -> None:
        """Answer every waiting long poll with 503 (the server is stopping)."""
        for waiting in list(self._waits):
            waiting.cancel()

    def _finish_later(self, outcome: object, request: Request, waiting: Deferred) -> None:
        self._waits.discard(waiting)
        if request.finished or request.channel is None:  # answered, or the client left
            return
        if isinstance(outcome, Failure):
            if outcome.check(ApiError):
                body = _error(request, outcome.value.status, outcome.getErrorMessage())
            elif outcome.check(CancelledError):
                body = _error(request, 503, "the server is stopping")
            else:
                body = _error(request, 500, outcome.getErrorMessage())
        else:
            status, value = outcome
            body = _json(request, status, value)
        request.write(body)
        request.finish()

    def _route(self, request: Request) -> Callable[[Request], Any]:
        """The handler for the request's path and method; ApiError 404 or 405 if none."""
        try:
            segments = [segment.decode("utf-8") for segment in request.postpath]
        except UnicodeDecodeError:
            raise ApiError(400, "the path is not UTF-8") from None
        if segments and segments[-1] == "":
            segments.pop()
        match segments:
            case []:
                methods = {"GET": self._index}
            case ["messages"]:
                methods = {"GET": self._list}
            case ["messages", address, folder, uid]:
                methods = {"GET": lambda request: self._read(request, address, folder, uid)}
            case ["wait"]:
                methods = {"POST": self._wait}
            case ["users"]:
                methods = {"POST": self._add_user}
            case ["deliver"]:
                methods = {"POST": self._deliver}
            case ["clear"]:
                methods = {"POST": self._clear}
            case ["faults"]:
                methods = {"GET": self._list_faults, "POST": self._add_fault}
                methods["DELETE"] = self._clear_faults
            case _:
                raise ApiError(404, f"no such resource: {request.path.decode('latin-1')}")
        method = request.method.decode("latin-1")
        if method not in methods:
            request.setHeader(b"Allow", ", ".join(sorted(methods)).encode("ascii"))
            raise ApiError(405, f"{method} is not allowed here ({', '.join(sorted(methods))})")
        return methods[method]

    def _index(self, request: Request) -> dict[str, Any]:
        return describe(self.server, self._url())

    def _list(self, request: Request) -> dict[str, Any]:
        address = _query(request, "address")
        folder = _query(request, "folder") or "INBOX"
        found = self.server.messages(address, folder)
        return {"messages": [message_metadata(message) for message in found]}

    def _read(self, request: Request, address: str, folder: str, uid: str) -> Any:
        if not uid.isdigit():
            raise ApiError(400, f"not a UID: {uid!r}")
        for message in self.server.messages(address, folder):
            if message.uid == int(uid):
                break
        else:
            raise ApiError(404, f"no message {uid} in {folder} of {address}")
        if _query(request, "format") == "json":
            value = message_metadata(message)
            value["raw_base64"] = base64.b64encode(message.raw).decode("ascii")
            return value
        return _Raw(message.raw)

    def _wait(self, request: Request) -> Deferred:
        body = _body(request)
        count = _integer(body, "count", 1, minimum=0)
        timeout = _number(body, "timeout", 5.0, maximum=MAX_WAIT)
        match = {key: _string(body, key) for key in body if key not in _WAIT_KEYS}
        waiting = self.server.when(count=count, timeout=timeout, **match)
        return waiting.addCallbacks(
            lambda found: (200, {"messages": [message_metadata(m) for m in found]}),
            self._wait_failed,
            errbackArgs=(count, timeout, match),
        )

    def _wait_failed(self, failure: Failure, count: int, timeout: float, match: dict) -> Any:
        failure.trap(TimeoutError)
        found = self.server.matching(**match)
        return (
            408,
            {
                "error": f"{len(found)} of {count} messages after {timeout:g} s",
                "messages": [message_metadata(message) for message in found],
            },
        )

    def _add_user(self, request: Request) -> dict[str, Any]:
        body = _body(request)
        address = _string(body, "address")
        password = _string(body, "password")
        self.server.add_user(address, password)
        return {"address": address}

    def _deliver(self, request: Request) -> dict[str, Any]:
        body = _body(request)
        address = _string(body, "address")
        folder = _string(body, "folder", "INBOX")
        flags = body.get("flags", [])
        if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
            raise ApiError(400, "'flags' must be a list of strings")
        if "message_base64" in body:
            try:
                message = base64.b64decode(_string(body, "message_base64"), validate=True)
            except binascii.Error:
                raise ApiError(400, "'message_base64' is not base64") from None
        else:
            message = _string(body, "message").encode("utf-8")
        uid = self.server.deliver(address, message, folder=folder, flags=tuple(flags))
        return {"address": address, "folder": folder, "uid": uid}

    def _clear(self, request: Request) -> dict[str, Any]:
        self.server.clear()
        return {}

    def _add_fault(self, request: Request) -> dict[str, Any]:
        body = _body(request)
        unknown = sorted(set(body) - set(_FAULT_KEYS))
        if unknown:
            raise ApiError(400, f"unknown fault keys: {', '.join(unknown)}")
        protocol = _string(body, "protocol")
        step = _string(body, "step")
        reply = _string(body, "reply", None)
        match = _string(body, "match", None)
        times = None if body.get("times", 1) is None else _integer(body, "times", 1, minimum=1)
        drop = body.get("drop", False)
        if not isinstance(drop, bool):
            raise ApiError(400, "'drop' must be true or false")
        delay = _number(body, "delay", 0.0, maximum=MAX_WAIT)
        fault = self.server.fault(
            protocol, step, reply=reply, match=match, times=times, drop=drop, delay=delay
        )
        fault_id, self._next_fault = self._next_fault, self._next_fault + 1
        self._faults[fault_id] = fault
        return {"id": fault_id}

    def _list_faults(self, request: Request) -> dict[str, Any]:
        active = set(map(id, self.server.faults.active()))
        faults = []
        for fault_id, fault in list(self._faults.items()):
            if id(fault) not in active:
                del self._faults[fault_id]
                continue
            faults.append({"id": fault_id, **{key: getattr(fault, key) for key in _FAULT_KEYS}})
            faults[-1]["hits"] = fault.hits
        return {"faults": faults}

    def _clear_faults(self, request: Request) -> dict[str, Any]:
        self.server.clear_faults()
        self._faults.clear()
        return {}


class _Raw(bytes):
    """A raw message, sent as ``message/rfc822`` rather than JSON."""


def _json(request: Request, status: int, value: Any) -> bytes:
    """Set the status and headers for ``value`` and return the body to send."""
    request.setResponseCode(status)
    if isinstance(value, _Raw):
        request.setHeader(b"Content-Type", b"message/rfc822")
        return bytes(value)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(value).encode("utf-8") + b"\n"


def _error(request: Request, status: int, message: str) -> bytes:
    return _json(request, status, {"error": message})


def _query(request: Request, name: str) -> str | None:
    """The last value of query parameter ``name``, or None."""
    query = request.uri.partition(b"?")[2].decode("latin-1")
    values = parse_qs(query, keep_blank_values=True).get(name)
    return values[-1] if values else None


def _body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is ``{}``); ApiError 400 or 413."""
    data = request.content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ApiError(413, f"the body is longer than {MAX_BODY} octets")
    if not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, f"the body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value


_REQUIRED = object()


def _string(body: dict[str, Any], key: str, default: Any = _REQUIRED) -> Any:
    value = body.get(key, default)
    if value is _REQUIRED:
        raise ApiError(400, f"{key!r} is required")
    if value is not default and not isinstance(value, str):
        raise ApiError(400, f"{key!r} must be a string")
    return value


def _integer(body: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ApiError(400, f"{key!r} must be an integer of at least {minimum}")
    return value


def _number(body: dict[str, Any], key: str, default: float, maximum: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise ApiError(400, f"{key!r} must be a number of seconds from 0 to {maximum:g}")
    return float(value)


class HttpApi:
    """The JSON API of one MailServer, listening on ``127.0.0.1`` at an ephemeral port."""

    def __init__(self, server: MailServer, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.resource = ApiResource(server, lambda: self.url)
        self._port: Any = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/``, once started."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1, once started."""
        if self._port is None:
            raise RuntimeError("the HTTP API is not listening")
        return self._port.getHost().port

    def start(self) -> Deferred:
        """Start listening (in the reactor thread); fire with the URL."""
        site = Site(self.resource)
        site.displayTracebacks = False
        site.noisy = False
        endpoint = TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1")

        def listening(port: Any) -> str:
            self._port = port
            return self.url

        return endpoint.listen(site).addCallback(listening)

    def stop(self) -> Deferred:
        """Stop listening and answer the waiting long polls with 503."""
        self.resource.cancel_waits()
        port, self._port = self._port, None
        if port is None:
            return maybeDeferred(lambda: None)
        return maybeDeferred(port.stopListening)
