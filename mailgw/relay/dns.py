"""Where mail for a domain goes: its MX hosts by preference, or the domain's own address.

The resolver is injected: anything with Twisted's ``IResolver`` methods ``lookupMailExchange``
and ``getHostByName`` (``twisted.names.client.createResolver()`` in production, a fake that
answers from a table in tests).  Domain literals (``user@[192.0.2.1]``) are refused: mailgw
relays only to names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from twisted.names import dns
from twisted.names.error import AuthoritativeDomainError, DNSNameError

#: The SMTP port of an MX host (RFC 5321 4.5.4.2 allows no other).
SMTP_PORT = 25


class RouteError(Exception):
    """No next hop for a domain; ``permanent`` says whether retrying can help."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Destination:
    """One next hop: ``host`` is the name its certificate must carry, ``address`` where to
    connect (an IP address, or the host name itself for the system resolver)."""

    host: str
    port: int
    address: str


def _ascii_domain(domain: str) -> str:
    """The domain as DNS wants it (IDNA for non-ASCII); RouteError for a literal or bad name."""
    domain = domain.strip().rstrip(".")
    if domain.startswith("["):
        raise RouteError(f"domain literal {domain} refused: mailgw relays to names only", True)
    try:
        ascii_name = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise RouteError(f"{domain!r} is not a valid domain name", True) from None
    if not ascii_name or any(not label for label in ascii_name.split(".")):
        raise RouteError(f"{domain!r} is not a valid domain name", True)
    return ascii_name.lower()


async def mail_hosts(resolver: object, domain: str) -> list[str]:
    """The host names that receive mail for ``domain``, most preferred first.

    Hosts of equal preference come in random order (RFC 5321 5.1).  A domain without MX records
    is its own mail host (the A/AAAA fallback); a null MX (RFC 7505) or a domain that does not
    exist raises a permanent RouteError, a DNS failure a temporary one."""
    name = _ascii_domain(domain)
    try:
        answers, _authority, _additional = await resolver.lookupMailExchange(name)
    except (DNSNameError, AuthoritativeDomainError):
        raise RouteError(f"domain {name} does not exist", True) from None
    except Exception as error:
        raise RouteError(f"MX lookup for {name} failed: {error}", False) from None
    records = [a.payload for a in answers if a.type == dns.MX]
    if not records:
        return [name]
    if any(str(r.name) in ("", ".") for r in records):
        raise RouteError(f"{name} accepts no mail (null MX)", True)
    random.shuffle(records)
    records.sort(key=lambda record: record.preference)
    return list(dict.fromkeys(str(record.name).lower() for record in records))


async def destinations(resolver: object, domain: str, port: int = SMTP_PORT) -> list[Destination]:
    """The next hops for ``domain`` in the order to try them, each with its address.

    A host whose address cannot be found is left out; RouteError (temporary) when none is left.
    ``port`` is 25 except in tests."""
    result = []
    failures = []
    for host in await mail_hosts(resolver, domain):
        try:
            address = await resolver.getHostByName(host)
        except Exception as error:
            failures.append(f"{host}: {error.__class__.__name__}")
            continue
        result.append(Destination(host=host, port=port, address=str(address)))
    if not result:
        raise RouteError(
            f"no address for the mail hosts of {domain} ({', '.join(failures)})", False
        )
    return result
