"""Where the fleet's Redis is: ``REDIS_URL`` read once, for the job store's redis-py client and
for the broker (kombu) alike.

Three forms are accepted::

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
    rediss://[[USER]:PASSWORD@]HOST[:PORT][/DB][?ssl_ca_certs=…&ssl_cert_reqs=required|none]
    sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…][/DB]?master_name=NAME[&sentinel_password=…]

With ``sentinel://`` the hosts are Redis Sentinels, asked which server is the primary of
``master_name`` now; the password is the primary's (``sentinel_password`` is the Sentinels'
own, if they have one). Kombu's spelling (``sentinel://H1:P1;sentinel://H2:P2``) is accepted
too. Every process finds the new primary after a failover: the job store through redis-py's
``Sentinel.master_for`` and the broker through kombu's Sentinel transport (issue 13, item 6).
What a failover may lose (writes the old primary acknowledged but had not passed on) is bounded
by ``INGEST_REDIS_MIN_REPLICAS``; jobs left without a dispatch are found by reconcile. The
client (``ingest_fleet.Client``) reads the same URL the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from ingest_fleet.errors import IngestError


class RedisUrlError(IngestError, ValueError):
    """``REDIS_URL`` is not one of the accepted forms; the message names the fix."""


#: The query parameters of a ``sentinel://`` URL (everything else is refused, so a typo shows).
_SENTINEL_QUERY = {"master_name", "sentinel_password"}


@dataclass(frozen=True)
class SentinelTarget:
    """A ``sentinel://`` REDIS_URL, parsed."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def sentinel_target(url: str) -> SentinelTarget | None:
    """The Sentinels and primary a ``sentinel://`` URL names (None for any other scheme);
    RedisUrlError naming REDIS_URL and the fix for a malformed one."""
    if not url.startswith("sentinel://"):
        return None
    parts = [p for p in url.split(";") if p.strip()]
    first = urlsplit(parts[0])
    query: dict[str, str] = {}
    hosts: list[tuple[str, int]] = []
    db_path = first.path
    for raw in parts:
        piece = urlsplit(raw.strip())
        if piece.scheme != "sentinel":
            raise RedisUrlError(f"REDIS_URL: every part of a Sentinel URL starts with sentinel:// (got {piece.scheme}://)")
        query.update(parse_qsl(piece.query))
        db_path = piece.path or db_path
        for host in piece.netloc.rpartition("@")[2].split(","):
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit():
                raise RedisUrlError(f"REDIS_URL: Sentinel address {host!r} is not HOST:PORT (e.g. redis-sentinel:26379)")
            hosts.append((name.strip("[]"), int(port)))
    unknown = set(query) - _SENTINEL_QUERY
    if unknown:
        raise RedisUrlError(f"REDIS_URL: unknown Sentinel option(s) {', '.join(sorted(unknown))}; "
                          f"accepted: {', '.join(sorted(_SENTINEL_QUERY))}")
    if not query.get("master_name"):
        raise RedisUrlError("REDIS_URL: a sentinel:// URL needs ?master_name=NAME (the name the Sentinels "
                          "monitor, e.g. sentinel://sentinel:26379/0?master_name=mymaster)")
    db = db_path.strip("/") or "0"
    if not db.isdigit():
        raise RedisUrlError(f"REDIS_URL: the database {db!r} is not a number")
    userinfo = first.netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    return SentinelTarget(sentinels=tuple(hosts), master_name=query["master_name"], db=int(db),
                          username=unquote(user) or None, password=unquote(password) or None,
                          sentinel_password=query.get("sentinel_password") or None)


def check(url: str) -> None:
    """RedisUrlError naming REDIS_URL unless it is one of the accepted forms."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix", "sentinel"):
        raise RedisUrlError(f"REDIS_URL: scheme {scheme or '(none)'}:// is not one of redis://, rediss://, "
                          "unix://, sentinel://")
    if scheme in ("redis", "rediss"):
        db = urlsplit(url).path.strip("/")
        if db and not db.isdigit():
            raise RedisUrlError(f"REDIS_URL: the database {db!r} is not a number (e.g. redis://host:6379/0)")
    sentinel_target(url)


def client(url: str, **options: Any) -> redis.Redis:
    """A redis-py client for ``url``; behind Sentinels, one that follows the current primary."""
    target = sentinel_target(url)
    if target is None:
        return redis.Redis.from_url(url, **options)
    sockets = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel_kwargs = dict(sockets, **({"password": target.sentinel_password} if target.sentinel_password else {}))
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **options)
    primary: redis.Redis = manager.master_for(target.master_name, db=target.db, username=target.username,
                                              password=target.password)
    return primary


def broker(url: str) -> tuple[str, dict[str, Any]]:
    """The broker URL kombu reads and the transport options it needs for ``url``: a Sentinel
    URL becomes kombu's ``sentinel://H1:P1;sentinel://H2:P2`` with ``master_name`` (and the
    Sentinels' password) in the transport options."""
    target = sentinel_target(url)
    if target is None:
        return url, {}
    auth = ""
    if target.password:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    # Every part carries the password: kombu's failover to the next Sentinel reads that part alone.
    hosts = [f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.sentinels]
    options: dict[str, Any] = {"master_name": target.master_name}
    if target.sentinel_password:
        options["sentinel_kwargs"] = {"password": target.sentinel_password}
    return ";".join(hosts), options
