"""Hosts on one machine: Linux network namespaces on a private bridge (issue 16, item 4).

Each host is a namespace of its own with one interface, ``eth0``, at ``10.231.<net>.<n>/24``,
joined to a bridge that lives in one more namespace: traffic goes only between the namespaces
made here (the machine's own network is not touched). :meth:`Hosts.cut` sets a host's link
down at the bridge, as a pulled cable or a failed switch port would; :meth:`Hosts.mend` sets it
up again. A process runs on a host through ``ip netns exec`` (:meth:`Hosts.argv`).

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2: :func:`unavailable` says why not.

Example::

    with Hosts("ifq", ["server", "w1", "w2"]) as hosts:
        redis = group.start("redis", hosts.argv("server", ["redis-server", "--bind", hosts.ip("server")]))
        hosts.cut("w1")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on this machine"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    probe = f"ifprobe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"this machine refuses to make a network namespace ({exc})"
    _ip("netns", "del", probe)
    return None


class Hosts:
    """``names`` as hosts on ``10.231.<net>.0/24`` (``net`` picked from the prefix), in order
    from ``.1``."""

    def __init__(self, prefix: str, names: Sequence[str], net: int | None = None):
        self.prefix, self.names = prefix, list(names)
        self.net = net if net is not None else 100 + int(uuid.uuid4().hex[:2], 16) % 100
        self.bridge_ns = f"{prefix}-net"
        self._made: list[str] = []

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def ip(self, name: str) -> str:
        return f"10.231.{self.net}.{self.names.index(name) + 1}"

    def _port(self, name: str) -> str:
        return f"{self.prefix[:6]}{self.names.index(name)}"

    def create(self) -> Hosts:
        _ip("netns", "add", self.bridge_ns)
        self._made.append(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for name in self.names:
            ns = self.ns(name)
            _ip("netns", "add", ns)
            self._made.append(ns)
            port = self._port(name)
            _ip("-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.ip(name)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def argv(self, name: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def run(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], timeout: float = 60,
            cwd: str | Path | None = None) -> str:
        """Run ``argv`` on host ``name`` to its end; its output (RuntimeError with its stderr if it fails)."""
        done = subprocess.run(self.argv(name, argv), capture_output=True, text=True, env=dict(env), timeout=timeout,
                              cwd=cwd)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:4])}... on {name}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def python(self, name: str, code: str, *args: str, env: Mapping[str, str], timeout: float = 60,
               cwd: str | Path | None = None) -> str:
        """Run ``code`` with this interpreter on host ``name``; its output."""
        return self.run(name, [sys.executable, "-c", code, *args], env=env, timeout=timeout, cwd=cwd)

    def cut(self, name: str) -> None:
        """The host's link goes down: nothing reaches it, nothing leaves it."""
        _ip("-n", self.bridge_ns, "link", "set", self._port(name), "down")

    def mend(self, name: str) -> None:
        _ip("-n", self.bridge_ns, "link", "set", self._port(name), "up")

    def destroy(self) -> None:
        for ns in reversed(self._made):
            try:
                _ip("netns", "del", ns)
            except RuntimeError:
                pass
        self._made.clear()

    def __enter__(self) -> Hosts:
        return self.create()

    def __exit__(self, *exc: Any) -> None:
        self.destroy()
