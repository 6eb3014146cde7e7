"""Which URLs a webhook may target: no server-side request forgery into private networks.

A target is an ``http`` or ``https`` URL whose host resolves only to public addresses
(:func:`refusal` names why an address is not one: loopback, private, link-local,
multicast, reserved, unspecified, shared or otherwise not globally routable; an IPv4
address mapped into IPv6 is judged as the IPv4 address). ``TIDEMARK_WEBHOOK_ALLOW``
(:func:`parse_allow_list`) lists hosts and CIDRs that are accepted anyway, for example
``127.0.0.1/32`` in a test or ``hooks.internal,10.8.0.0/16`` on a private network.

The check runs twice: when a webhook is registered (the gateway answers 400) and before
every delivery attempt, on the addresses the connection then uses (DNS can change in
between: ``workers.webhook_http`` connects only to addresses that passed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from schemas.errors import TidemarkError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES: Final = ("http", "https")
_MAX_HOST: Final = 253


class UnsafeTarget(TidemarkError):
    """A webhook URL Tidemark will not call (the message says why)."""


class AllowListError(ValueError):
    """A ``TIDEMARK_WEBHOOK_ALLOW`` entry that is neither a host name nor a CIDR."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """Hosts (lowercase names, matched exactly) and networks accepted although not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def permits(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net
                   for net in self.networks)


def parse_allow_list(text: str) -> AllowList:
    """``host`` or ``address[/prefix]`` entries, comma-separated."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in text.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        labels = entry.rstrip(".").split(".")
        if "/" in entry or not all(label and len(label) <= 63 and label.replace("-", "")
                                   .isalnum() for label in labels):
            raise AllowListError(f"{raw.strip()!r} is neither a host name nor a CIDR")
        hosts.add(entry.rstrip("."))
    return AllowList(frozenset(hosts), tuple(networks))


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not call ``address`` (None: it is a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped)
    for reason, flag in (("unspecified", address.is_unspecified),
                         ("loopback", address.is_loopback),
                         ("link-local", address.is_link_local),
                         ("multicast", address.is_multicast),
                         ("reserved", address.is_reserved),
                         ("private", address.is_private)):
        if flag:
            return reason
    if not address.is_global:
        return "not globally routable"
    return None


def check_address(address: IPAddress, allow: AllowList, host: str) -> None:
    """:class:`UnsafeTarget` unless ``address`` is public or allowed."""
    reason = refusal(address)
    if reason is not None and not allow.permits(address):
        raise UnsafeTarget(f"{host} is {address}, a {reason} address: webhooks call public "
                           "addresses only (or those in TIDEMARK_WEBHOOK_ALLOW)")


def split_target(url: str) -> tuple[str, int]:
    """The host (lowercase, without brackets) and port of a webhook URL, or
    :class:`UnsafeTarget` for a URL that is not an absolute http(s) URL of a host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"not a valid URL: {exc}") from exc
    if parts.scheme not in SCHEMES:
        raise UnsafeTarget("a webhook URL must be http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("a webhook URL must not carry credentials (sign with the secret)")
    host = (parts.hostname or "").rstrip(".")
    if not host or len(host) > _MAX_HOST:
        raise UnsafeTarget("a webhook URL must name a host")
    return host, port or (443 if parts.scheme == "https" else 80)


def literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def check_url(url: str, allow: AllowList) -> list[IPAddress]:
    """The addresses ``url``'s host resolves to, each checked (an allowed host name is
    not resolved: []); :class:`UnsafeTarget` if any is refused or none is found."""
    host, port = split_target(url)
    address = literal(host)
    if address is not None:
        check_address(address, allow, host)
        return [address]
    if host in allow.hosts:
        return []
    addresses = await resolve(host, port)
    for found in addresses:
        check_address(found, allow, host)
    return addresses


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of ``host`` (:class:`UnsafeTarget` if it does not resolve)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeTarget(f"{host} does not resolve: {exc}") from exc
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        found = literal(str(sockaddr[0]).split("%", 1)[0])
        if found is not None and found not in out:
            out.append(found)
    if not out:
        raise UnsafeTarget(f"{host} does not resolve")
    return out
