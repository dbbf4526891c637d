"""The ``mailgw`` admin command: manage the users in the passwd-file and check a configuration.

::

    mailgw [--config FILE] user add ADDRESS [--password-stdin]
    mailgw [--config FILE] user passwd ADDRESS [--password-stdin]
    mailgw [--config FILE] user del ADDRESS
    mailgw [--config FILE] user list
    mailgw [--config FILE] check-config
    mailgw [--config FILE] queue list
    mailgw [--config FILE] queue flush
    mailgw [--config FILE] queue delete ID
    mailgw testserver [--json] [--no-catch-all] [--auth-required] [--no-plaintext]
                      [--domain DOMAIN ...] [--user ADDRESS:PASSWORD ...]

Without ``--config`` the embedded default configuration is used, as by a bare ``twistd mailgw``.
Every failure is reported as one line on stderr (``mailgw: error: ...``) with a non-zero exit
status: 1 when the operation failed, 2 when the command line itself is wrong.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import LogLevel, formatEvent, globalLogBeginner
from twisted.python.failure import Failure

from mailgw import __version__
from mailgw.auth import (
    NoSuchUser,
    PasswdFileUserDatabase,
    UserDatabaseError,
    UserExists,
)
from mailgw.config import SERVICES, Config, ConfigError, default_config, load_config
from mailgw.relay.queue import NoSuchEntry, OutboundQueue, QueueError

PROG = "mailgw"

#: Exit status when the requested operation failed.
EXIT_FAILURE = 1
#: Exit status when the command line is wrong.
EXIT_USAGE = 2
#: Exit status after Ctrl-C.
EXIT_INTERRUPTED = 130

#: The longest password line read with --password-stdin, in octets.
MAX_PASSWORD = 4096


class CommandError(Exception):
    """The command cannot be carried out; the message is shown to the user as is."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        """Report a command-line mistake on one line and exit with status 2."""
        _fail(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def _fail(message: str, status: int = EXIT_FAILURE) -> NoReturn:
    """Print ``mailgw: error: <message>`` on one line of stderr and exit."""
    text = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"{PROG}: error: {text}", file=sys.stderr)
    raise SystemExit(status)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for the ``mailgw`` command line."""
    parser = _Parser(prog=PROG, description="Administer a mailgw mail server.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="the configuration file (default: the embedded default configuration)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    user = commands.add_parser("user", help="add, change, remove or list users")
    actions = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("add", "add a user"), ("passwd", "set a user's password")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("address", metavar="ADDRESS", help="e.g. alice@example.org")
        action.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password as one line from standard input instead of prompting",
        )
    remove = actions.add_parser("del", help="remove a user", description="remove a user")
    remove.add_argument("address", metavar="ADDRESS")
    actions.add_parser("list", help="list the users", description="list the users")

    commands.add_parser(
        "check-config",
        help="validate the configuration and summarise it",
        description="validate the configuration and summarise it",
    )
    queue = commands.add_parser(
        "queue",
        help="list, retry or delete the outbound messages",
        description="list, retry or delete the messages waiting for delivery to other servers",
    )
    queue_actions = queue.add_subparsers(dest="action", metavar="ACTION", required=True)
    queue_actions.add_parser("list", help="list the queued messages", description="list them")
    text = "make every queued message due now (a running server retries it at its next scan)"
    queue_actions.add_parser("flush", help="retry every queued message now", description=text)
    text = "remove a queued message without delivering it or bouncing it"
    delete = queue_actions.add_parser("delete", help=text, description=text)
    delete.add_argument("id", metavar="ID", help="the queue id, as 'queue list' shows it")
    _add_testserver_parser(commands)
    return parser


def _add_testserver_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``mailgw testserver`` and its options."""
    text = "run a throw-away mail server for tests, with an HTTP JSON API to drive it"
    testserver = commands.add_parser(
        "testserver",
        help=text,
        description=f"{text[0].upper()}{text[1:]}.  It listens on 127.0.0.1 at ephemeral ports "
        "(every service, TLS with a CA made for the run), prints the endpoints as NAME=value "
        "lines (or one JSON object) once every listener answers, and runs until SIGINT or "
        "SIGTERM, then removes its data.  --config is ignored.  See docs/testing.rst.",
    )
    testserver.add_argument(
        "--json", action="store_true", help="print the endpoints as one JSON object"
    )
    testserver.add_argument(
        "--catch-all",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="accept mail for any recipient at any domain without login (default: yes)",
    )
    testserver.add_argument(
        "--auth-required",
        action="store_true",
        help="make the smtp port require AUTH before MAIL, as submission does",
    )
    testserver.add_argument(
        "--no-plaintext",
        action="store_true",
        help="refuse passwords sent without TLS (default: allowed)",
    )
    testserver.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="a local domain, repeatable (default: example.test)",
    )
    testserver.add_argument(
        "--user",
        action="append",
        default=[],
        type=_user_spec,
        metavar="ADDRESS:PASSWORD",
        help="a user to add, repeatable",
    )


def _user_spec(text: str) -> tuple[str, str]:
    """``ADDRESS:PASSWORD`` as a pair; argparse reports a malformed one."""
    address, colon, password = text.partition(":")
    if not colon or not address or not password:
        raise argparse.ArgumentTypeError(f"expected ADDRESS:PASSWORD, got {text!r}")
    return address, password


def _load(path: Path | None) -> Config:
    """The configuration named on the command line, or the embedded default."""
    return default_config() if path is None else load_config(path)


def _source(config: Config) -> str:
    """Where a configuration came from, for messages."""
    return str(config.source) if config.source is not None else "<embedded default>"


def _local_address(config: Config, users: PasswdFileUserDatabase, address: str) -> str:
    """The canonical form of ``address``; refuse one outside the configured local domains."""
    canonical = users.canonical(address)
    domain = canonical.rpartition("@")[2]
    if domain not in config.domains:  # both lower-cased
        raise CommandError(
            f"{canonical}: domain {domain!r} is not one of the local domains "
            f"({', '.join(config.domains)}) in {_source(config)}"
        )
    return canonical


def read_password(from_stdin: bool) -> bytes:
    """Read a new password: one line from stdin, or typed twice at a terminal prompt.

    Refuse an empty password, a mismatch, and a non-terminal stdin without ``from_stdin``.
    """
    if from_stdin:
        line = sys.stdin.buffer.readline(MAX_PASSWORD + 2)
        password = line.rstrip(b"\r\n")
        if len(password) > MAX_PASSWORD:
            raise CommandError(f"the password is longer than {MAX_PASSWORD} octets")
    else:
        if not sys.stdin.isatty():
            raise CommandError("standard input is not a terminal: use --password-stdin")
        try:
            first = getpass.getpass("New password: ")
            second = getpass.getpass("Retype new password: ")
        except EOFError:
            raise CommandError("no password given") from None
        if first != second:
            raise CommandError("the passwords do not match")
        password = first.encode("utf-8", "surrogateescape")
    if not password:
        raise CommandError("refusing an empty password")
    return password


def _user_command(args: argparse.Namespace, config: Config) -> None:
    """Carry out ``mailgw user ...``."""
    users = PasswdFileUserDatabase(config.users_file, config.allow_plaintext_schemes)
    if args.action == "list":
        for address in users.users():
            print(address)
        return
    if args.action == "del":
        # No domain check: a user left over from a domain no longer served can still be removed.
        address = users.canonical(args.address)
        try:
            users.remove_user(address)
        except NoSuchUser:
            raise CommandError(f"{address}: no such user") from None
        print(f"removed {address}")
        return
    address = _local_address(config, users, args.address)
    if args.action == "add":
        # Checked before asking for the password, and again (atomically) by add_user.
        if users.exists(address):
            raise CommandError(f"{address}: the user already exists")
        password = read_password(args.password_stdin)
        try:
            users.add_user(address, password)
        except UserExists:
            raise CommandError(f"{address}: the user already exists") from None
        print(f"added {address}")
    else:
        if not users.exists(address):
            raise CommandError(f"{address}: no such user")
        password = read_password(args.password_stdin)
        try:
            users.set_password(address, password)
        except NoSuchUser:
            raise CommandError(f"{address}: no such user") from None
        print(f"password changed for {address}")


def _check_config(config: Config) -> None:
    """Carry out ``mailgw check-config``: the configuration loaded; summarise it."""
    print(f"OK: {_source(config)}")
    print(f"  hostname: {config.hostname}")
    print(f"  domains: {', '.join(config.domains)}")
    print(f"  data_dir: {config.data_dir}")
    print(f"  users: {config.users_file}")
    enabled = [(name, config.listen.get(name)) for name in SERVICES if config.listen.get(name)]
    if not enabled:
        print("  listeners: none")
    for name, endpoint in enabled:
        print(f"  {name}: {endpoint}")
    if config.tls_certificate is not None:
        print(f"  tls: {config.tls_certificate}")
    if config.allow_plaintext:
        print("  allow_plaintext: yes (passwords may travel without TLS)")
    relay = config.relay
    if relay.smarthost is not None:
        host, port = relay.smarthost
        auth = f", AUTH as {relay.smarthost_user}" if relay.smarthost_user else ""
        print(f"  relay: smarthost {host}:{port} (TLS {relay.smarthost_tls}{auth})")
    else:
        print("  relay: directly to each recipient domain's MX hosts")


def _queue_command(args: argparse.Namespace, config: Config) -> None:
    """Carry out ``mailgw queue ...`` on the queue in the data directory."""
    if not config.queue_dir.is_dir():
        if args.action == "delete":
            raise CommandError(f"{args.id}: no such queued message")
        print(f"the queue is empty ({config.queue_dir} does not exist)")
        return
    queue = OutboundQueue(config.queue_dir)
    if args.action == "delete":
        try:
            entry = queue.get(args.id)
            queue.delete(args.id)
        except NoSuchEntry:
            raise CommandError(f"{args.id}: no such queued message") from None
        print(f"deleted {entry.id} (from <{entry.sender}> to {', '.join(entry.recipients)})")
    elif args.action == "flush":
        count = queue.flush()
        print(
            f"{_messages(count)} due now; a running server retries them at its next scan "
            "of the queue"
        )
    else:
        _list_queue(queue)


def _list_queue(queue: OutboundQueue) -> None:
    """Print each queued message: id, size, age, attempts, next attempt, envelope, errors."""
    entries = queue.entries()
    for entry in entries:
        try:
            with queue.open_message(entry.id) as message:
                size = os.fstat(message.fileno()).st_size
        except NoSuchEntry:
            continue  # delivered while we listed
        print(
            f"{entry.id}  {size} octets  queued {_when(entry.created)}  "
            f"attempts {entry.attempts}  next {_when(entry.next_attempt)}"
        )
        print(f"  from <{entry.sender}>")
        for recipient in entry.recipients:
            error = _printable(entry.errors.get(recipient, ""))
            print(f"  to   <{recipient}>" + (f"  last error: {error}" if error else ""))
        if entry.bounce is not None:
            for recipient, reason in entry.bounce.failures.items():
                print(f"  bounce pending for <{recipient}>: {_printable(reason)}")
    print(f"{_messages(len(entries))} in the queue" if entries else "the queue is empty")


def _printable(text: str) -> str:
    """``text`` (a remote server's reply) with control characters shown as spaces."""
    return "".join(c if c.isprintable() else " " for c in text)


def _when(seconds: float) -> str:
    """A time stamp in UTC, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _messages(count: int) -> str:
    """'1 message', '2 messages'."""
    return f"{count} message" + ("" if count == 1 else "s")


def _describe_os_error(error: OSError) -> str:
    """``<reason>: <file>`` for an OSError, without Python's ``[Errno N]`` noise."""
    reason = error.strerror or str(error)
    return f"{reason}: {error.filename}" if error.filename else reason


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Exits through SystemExit, with one line on stderr, on any error.
    """
    args = build_parser().parse_args(argv)
    if args.command == "testserver":
        return _testserver(args)
    try:
        config = _load(args.config)
        if args.command == "check-config":
            _check_config(config)
        elif args.command == "queue":
            _queue_command(args, config)
        else:
            _user_command(args, config)
    except (ConfigError, CommandError, UserDatabaseError, QueueError) as error:
        _fail(str(error))
    except OSError as error:
        _fail(_describe_os_error(error))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        _fail("interrupted", EXIT_INTERRUPTED)
    return 0


def _testserver(args: argparse.Namespace) -> int:
    """Carry out ``mailgw testserver``: serve until SIGINT or SIGTERM, then clean up; return 0."""
    from twisted.internet import reactor

    from mailgw.testing import MailServer
    from mailgw.testing.http import HttpApi

    try:
        server = MailServer(
            catch_all=args.catch_all,
            auth_required=args.auth_required,
            allow_plaintext=not args.no_plaintext,
            domains=tuple(args.domain) or ("example.test",),
        )
    except ValueError as error:
        _fail(str(error))
    api = HttpApi(server, reactor)
    errors: list[str] = []

    async def start() -> None:
        await server.start_in_reactor()
        for address, password in args.user:
            server.add_user(address, password)
        await api.start()
        await _all_answer(
            reactor,
            server.host,
            [*(getattr(server, f"{name}_port") for name in server.services), api.port],
        )
        _print_endpoints(server, api.url, args.json)

    def failed(failure: Failure) -> None:
        errors.append(failure.getErrorMessage())
        reactor.stop()

    def stop() -> Deferred:
        return DeferredList([api.stop(), server.stop_in_reactor()])

    reactor.callWhenRunning(lambda: ensureDeferred(start()).addErrback(failed))
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()  # SIGINT and SIGTERM stop it
    if errors:
        _fail(errors[0])
    return 0


async def _all_answer(reactor: object, host: str, ports: list[int]) -> None:
    """Return once a TCP connection to each of ``ports`` has been accepted (and closed)."""
    for port in ports:
        protocol = await connectProtocol(TCP4ClientEndpoint(reactor, host, port), Protocol())
        protocol.transport.loseConnection()


def _print_endpoints(server: object, http_url: str, as_json: bool) -> None:
    """Print the endpoints on stdout in one write: ``MAILGW_NAME=value`` lines, or JSON."""
    from mailgw.testing.http import describe

    info = describe(server, http_url)
    if as_json:
        text = json.dumps(info) + "\n"
    else:
        text = "".join(
            f"MAILGW_{key.upper()}={shlex.quote(str(value))}\n" for key, value in info.items()
        )
    sys.stdout.write(text)
    sys.stdout.flush()


def _print_warning(event: dict) -> None:
    """Log observer: show warnings and errors (e.g. a skipped passwd-file line) on stderr."""
    if event.get("log_level", LogLevel.info) >= LogLevel.warn:
        print(f"{PROG}: warning: {formatEvent(event)}", file=sys.stderr)


def main() -> None:
    """Entry point of the ``mailgw`` console script."""
    globalLogBeginner.beginLoggingTo([_print_warning], redirectStandardIO=False)
    raise SystemExit(run())
