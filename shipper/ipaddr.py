"""The one spelling of an address in a record's IP fields. Pure.

A client that reaches an IPv6 socket over IPv4 is named ``::ffff:1.2.3.4`` by the
programs that print the socket's address as it is (indimail's and Fefe's tcpserver,
Courier, Dovecot), ``1.2.3.4`` by those that unmap it (Postfix, ucspi-tcp). A record's
IP fields (``remote_ip``, ``local_ip``, ``relay_ip``, ``orig_client_ip``: every field
named ``*_ip``) hold such an IPv4-mapped address (as programs write it: lower case)
as its IPv4 address, so a search for ``remote_ip:1.2.3.4`` finds every program's
record of that client; any other text is kept as written. The line's own spelling stays in ``message`` and ``raw``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_address(text: str) -> IPAddress | None:
    """``text`` as an address (an IPv4-mapped IPv6 one as its IPv4 address), or None."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) else None
    return a if mapped is None else mapped


def ip_field(text: str) -> str:
    """What an IP field holds for ``text``: an IPv4-mapped address as its IPv4 address."""
    if not may_hold_mapped(text):
        return text
    a = ip_address(text)
    return str(a) if a is not None and a.version == 4 else text


def unmap_fields(fields: dict[str, Any]) -> None:
    """Every ``*_ip`` field of a parser's result in its one spelling (``ip_field``)."""
    for k, v in fields.items():
        if k.endswith("_ip") and type(v) is str:
            fields[k] = ip_field(v)


# The first "." or ":" is where the first run of hex digits ends, so the match never
# backtracks (the old "[0-9A-Fa-f.:]*[.:]" tried every colon of a run of them: quadratic);
# at most 45 characters before the zone ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")
# and at most 64 of a zone (an interface name: IFNAMSIZ is 16; or a number)
_ADDRESS_RE = re.compile(r"(?=[^%]{1,45}(?:%|\Z))[0-9A-Fa-f]*[.:][0-9A-Fa-f.:]*(?:%[\w.-]{1,64})?")


def may_be_address(text: str) -> bool:
    """Whether ``text`` has an IP address's characters (IPv4, IPv6, a scope): the words
    programs write where they have none (Postfix's ``unknown[unknown]``, ``(null)``)
    make no ``*_ip`` field, which an index typing it as an address would refuse."""
    return _ADDRESS_RE.fullmatch(text) is not None


def may_hold_mapped(text: str) -> bool:
    """Whether ``text`` (a line, or a batch of lines) may name an IPv4-mapped address:
    its ``:ffff`` as the programs write it (inet_ntop, djb's ip6_fmt: lower case). One
    scan of a multilog batch, so the fields of its other lines are not looked at: 200
    instructions a line (0.8 % of parsing, bench_instructions.py), twice that to look
    for upper case too; an upper-case ``::FFFF:…`` in a line is kept as written."""
    return ":ffff" in text
