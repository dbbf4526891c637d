"""POP3 command lines (RFC 1939, RFC 2449, RFC 2595) parsed into typed commands.

Replaces the parsing inside ``twisted.mail.pop3.POP3.state_COMMAND``, which splits on spaces and
hands the pieces to ``do_<KEYWORD>`` methods found by reflection, so that a wrong argument count
surfaces as a ``TypeError`` and ``DELE 0`` is taken for the last message.  Here every command has
a declared argument shape, message numbers are checked to be positive decimal integers, arguments
are at most 40 characters (RFC 2449 section 4), and any mistake is a ``CommandError`` whose text is
the ``-ERR`` reply.  Two arguments are exempt from the 40-character rule: PASS's password (the rest
of the line, RFC 1939 section 7; generated passwords are often longer) and AUTH's initial response
(RFC 5034 section 4); the command line limit still bounds them.  Pure: bytes in, objects out; no
Twisted, no disk.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A message number or line count longer than this is refused rather than converted.
MAX_NUMBER_DIGITS = 10

#: The longest argument a command may have, in characters (RFC 1939 section 3, RFC 2449 section 4).
MAX_ARGUMENT = 40


class CommandError(ValueError):
    """A line that is not a valid command; ``str(error)`` is the text of the ``-ERR`` reply."""


@dataclass(frozen=True)
class Command:
    """One parsed command line."""

    #: The keyword, upper-case, e.g. ``"RETR"``.
    name: str
    #: The message-number argument (RETR, DELE, TOP, and LIST/UIDL when given), 1-based.
    number: int | None = None
    #: TOP's count of body lines.
    count: int | None = None
    #: USER's name, PASS's password, or AUTH's mechanism (upper-case), as sent.
    text: bytes = b""
    #: AUTH's initial response (still base64), or None when the client sent none.
    response: bytes | None = None


_NO_ARGS = "none"
_OPTIONAL_NUMBER = "optional number"
_NUMBER = "number"
_NUMBER_AND_COUNT = "number and count"
_WORD = "word"
_REST_OF_LINE = "rest of line"
_MECHANISM = "mechanism and optional initial response"

#: Every command mailgw knows and the arguments it takes.
_SHAPES = {
    "USER": _WORD,
    "PASS": _REST_OF_LINE,
    "AUTH": _MECHANISM,
    "QUIT": _NO_ARGS,
    "CAPA": _NO_ARGS,
    "STLS": _NO_ARGS,
    "STAT": _NO_ARGS,
    "LIST": _OPTIONAL_NUMBER,
    "UIDL": _OPTIONAL_NUMBER,
    "RETR": _NUMBER,
    "DELE": _NUMBER,
    "TOP": _NUMBER_AND_COUNT,
    "RSET": _NO_ARGS,
    "NOOP": _NO_ARGS,
}

#: The command names parse_command() can return.
COMMANDS = frozenset(_SHAPES)


def parse_number(token: bytes, minimum: int = 1) -> int:
    """Return the decimal integer in ``token``; raise CommandError unless it is >= ``minimum``."""
    if not token.isdigit() or len(token) > MAX_NUMBER_DIGITS:
        raise CommandError("Invalid number: expected digits only")
    value = int(token)
    if value < minimum:
        raise CommandError("Invalid message number" if minimum else "Invalid number")
    return value


def parse_command(line: bytes) -> Command:
    """Parse one command line (without its line end; a trailing CR is ignored)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    keyword, _, rest = line.partition(b" ")
    try:
        name = keyword.decode("ascii").upper()
    except UnicodeDecodeError:
        raise CommandError("Unknown command") from None
    shape = _SHAPES.get(name)
    if shape is None:
        raise CommandError("Unknown command")
    if shape == _REST_OF_LINE:
        if not rest:
            raise CommandError(f"{name} needs an argument")
        return Command(name, text=rest)
    args = rest.split()
    if shape == _MECHANISM:
        return _auth(args)
    if any(len(arg) > MAX_ARGUMENT for arg in args):
        raise CommandError(f"{name}: arguments are limited to {MAX_ARGUMENT} characters")
    if shape == _NO_ARGS:
        if args:
            raise CommandError(f"{name} takes no arguments")
        return Command(name)
    if shape == _WORD:
        if len(args) != 1:
            raise CommandError(f"{name} needs exactly one argument")
        return Command(name, text=args[0])
    if shape == _OPTIONAL_NUMBER:
        if len(args) > 1:
            raise CommandError(f"{name} takes at most one argument")
        return Command(name, number=parse_number(args[0]) if args else None)
    if shape == _NUMBER:
        if len(args) != 1:
            raise CommandError(f"{name} needs a message number")
        return Command(name, number=parse_number(args[0]))
    if len(args) != 2:
        raise CommandError(f"{name} needs a message number and a line count")
    return Command(name, number=parse_number(args[0]), count=parse_number(args[1], minimum=0))


def _auth(args: list[bytes]) -> Command:
    """AUTH [mechanism [initial-response]] (RFC 5034; bare AUTH lists the mechanisms)."""
    if len(args) > 2:
        raise CommandError("AUTH takes a mechanism and at most an initial response")
    if not args:
        return Command("AUTH")
    if len(args[0]) > MAX_ARGUMENT:
        raise CommandError(f"AUTH: arguments are limited to {MAX_ARGUMENT} characters")
    return Command("AUTH", text=args[0].upper(), response=args[1] if len(args) == 2 else None)
