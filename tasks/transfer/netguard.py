"""Where the fleet's own fetches may go (issue 15, item 3): a URL the fleet reads itself (a
relayed source) must not reach a private, loopback, link-local (cloud metadata included),
multicast or reserved address, unless that address is in ``INGEST_RELAY_ALLOW_NETS``.

The check is made twice: at submit, on every address the host name resolves to
(:func:`check_url`), so a bad URL is refused at the door; and on the address each connection
actually reached (:func:`guarded_session`), so neither a DNS answer that changed since
(rebinding) nor a redirect to another host gets through.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from tasks.errors import ConfigError, PermanentError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
VAR = "INGEST_RELAY_ALLOW_NETS"


class AddressRefused(PermanentError):
    """The URL leads to an address the fleet may not fetch from."""


def allow_nets(raw: str) -> tuple[Network, ...]:
    """``INGEST_RELAY_ALLOW_NETS``: comma-separated CIDRs (ConfigError naming it otherwise)."""
    nets = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{VAR}: {part!r} is not a network (e.g. 10.20.0.0/16,fd00::/8)") from None
    return tuple(nets)


def forbidden(address: str, allow: Sequence[Network]) -> bool:
    """Whether the fleet may not connect to ``address``."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in allow if net.version == ip.version):
        return False
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


def _refusal(host: str, address: str) -> AddressRefused:
    return AddressRefused(f"{host} leads to {address}, a private, loopback, link-local or reserved address the "
                          f"fleet does not fetch from; add its network to {VAR} if it is meant")


def check_url(url: str, allow: Sequence[Network]) -> None:
    """AddressRefused unless every address ``url``'s host resolves to may be fetched."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressRefused(f"{host} does not resolve ({exc.strerror}); check the URL") from None
    for *_, sockaddr in infos:
        if forbidden(str(sockaddr[0]), allow):
            raise _refusal(host, str(sockaddr[0]))


def _guarded(base: type[Any], allow: tuple[Network, ...]) -> type[Any]:
    class Guarded(base):  # type: ignore[misc]
        def _new_conn(self) -> socket.socket:
            sock: socket.socket = super()._new_conn()
            peer = str(sock.getpeername()[0])
            if forbidden(peer, allow):
                sock.close()
                raise _refusal(str(self.host), peer)
            return sock

    return Guarded


def guarded_session(allow: Iterable[Network] = ()) -> requests.Session:
    """A requests session whose every connection (redirects included) is checked where it landed."""
    nets = tuple(allow)

    class HttpPool(HTTPConnectionPool):
        ConnectionCls = _guarded(HTTPConnection, nets)

    class HttpsPool(HTTPSConnectionPool):
        ConnectionCls = _guarded(HTTPSConnection, nets)

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": HttpPool, "https": HttpsPool}

    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: the check must see the real peer
    # ... but the CA bundle an operator gives every requests client still applies.
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    for prefix in ("http://", "https://"):
        session.mount(prefix, Adapter())
    return session
