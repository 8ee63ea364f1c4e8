"""Where webhooks may send: public addresses only, after DNS resolution (against SSRF).

A destination is refused when any address its host resolves to is loopback, private,
link-local, multicast, reserved or otherwise not global, unless the host name or a network
holding the address is listed in MODELHUB_WEBHOOK_ALLOWED_HOSTS. The check returns the
addresses it approved, and delivery connects to one of those (never resolving again), so a
DNS answer that changes between the check and the connection cannot redirect it.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Destination:
    """A checked webhook URL: where to connect, and what to send as Host and the request path."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def _allowed(entries: list[str]) -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names, networks = set(), []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            names.add(entry.strip().lower().rstrip("."))
    return names, networks


NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


def _why_refused(address: IPAddress) -> str | None:
    """Return why `address` is not a public destination, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_site_local:
            return "site-local"
        if address in NAT64_PREFIX:
            return "NAT64 (an embedded IPv4 address)"
        # IPv4 carried inside IPv6 (mapped, 6to4, Teredo) is judged as that IPv4 address.
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            address = embedded
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:
        return "non-public"
    return None


def destination_check(url: str, *, allowed_hosts: list[str], resolve=None) -> Destination:
    """Return the checked destination of `url`, or raise ValidationError saying why it is refused.

    Args:
        url: an http or https URL.
        allowed_hosts: MODELHUB_WEBHOOK_ALLOWED_HOSTS (host names and CIDRs allowed besides public addresses).
        resolve: a getaddrinfo-like resolver; socket.getaddrinfo when None.

    Example:
        destination_check("https://hooks.example.com/modelhub", allowed_hosts=[])
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"Webhook URL {url!r} is not an http(s) URL with a host; expected e.g. https://hooks.example.com/modelhub.",
            detail={"url": ["Expected an http or https URL with a host."]},
        )
    host = parts.hostname.lower().rstrip(".")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValidationError(f"Webhook URL {url!r} has a bad port: {exc}.", detail={"url": [str(exc)]}) from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        infos = (resolve or socket.getaddrinfo)(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        message = f"The webhook host '{host}' could not be resolved ({exc}). Check the URL."
        raise ValidationError(message, detail={"url": [message]}, code="destination_unresolvable") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    names, networks = _allowed(allowed_hosts)
    if host in names:
        return Destination(parts.scheme, host, port, path, tuple(addresses))
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = _why_refused(address)
        if reason is not None and not any(address in network for network in networks):
            message = (
                f"Webhook destination '{host}' resolves to {text}, a {reason} address: webhooks only go to "
                "public addresses. To send to it anyway (e.g. a receiver inside your network), list the host "
                "or its network in MODELHUB_WEBHOOK_ALLOWED_HOSTS, e.g. MODELHUB_WEBHOOK_ALLOWED_HOSTS="
                f"{host if host != text else text}."
            )
            raise ValidationError(message, detail={"url": [message]}, code="destination_not_allowed")
    return Destination(parts.scheme, host, port, path, tuple(addresses))
