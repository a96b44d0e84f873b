"""Storage URIs: every scheme, the two query parameters, and no password in any message."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from guardrail.backends import storage_from_uri
from guardrail.backends.redis import RedisStorage
from guardrail.backends.uri import RedisTarget, mask_uri, parse_uri
from guardrail.errors import StorageError


def test_redis_defaults() -> None:
    target = parse_uri("redis://127.0.0.1:6379/2")
    assert target == RedisTarget(
        "redis",
        "redis://127.0.0.1:6379/2",
        (),
        "",
        None,
        None,
        timeout=0.25,
        prefix="gr:",
        max_connections=100,
    )


def test_max_connections() -> None:
    assert parse_uri("redis+cluster://h:1?max_connections=7").max_connections == 7
    for value in ("0", "many", "1.5"):
        with pytest.raises(StorageError, match="max_connections must be at least 1"):
            parse_uri(f"redis://h:1/0?max_connections={value}")


def test_timeout_and_prefix_are_ours_other_parameters_reach_redis_py() -> None:
    target = parse_uri("rediss://:pw@cache:6380/0?timeout=1.5&prefix=edge:&ssl_cert_reqs=none")
    assert (target.timeout, target.prefix) == (1.5, "edge:")
    assert target.url == "rediss://:pw@cache:6380/0?ssl_cert_reqs=none"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", ""])
def test_timeout_must_be_a_positive_number(value: str) -> None:
    with pytest.raises(StorageError, match="timeout must be a positive number"):
        parse_uri(f"redis://localhost:6379/0?timeout={value}")


def test_cluster_hosts_and_credentials() -> None:
    target = parse_uri("redis+cluster://app:s%40cret@h1:7000,h2:7001,[::1]:7002?timeout=0.1")
    assert target.hosts == (("h1", 7000), ("h2", 7001), ("::1", 7002))
    assert (target.username, target.password, target.timeout) == ("app", "s@cret", 0.1)


def test_sentinel_service_and_bare_password() -> None:
    target = parse_uri("redis+sentinel://hunter2@s1:26379,s2:26380/mymaster?prefix=x:")
    assert target.hosts == (("s1", 26379), ("s2", 26380))
    assert (target.service, target.password, target.username, target.prefix) == (
        "mymaster",
        "hunter2",
        None,
        "x:",
    )


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("redis+sentinel://hunter2@s1:26379", "name the sentinel service"),
        ("redis+cluster://:hunter2@h1:7000/3", "only database 0"),
        ("redis+cluster://:hunter2@h1", "is not host:port"),
        ("redis+cluster://:hunter2@h1:port", "is not host:port"),
        ("redis+cluster://:hunter2@h1:7000?db=1&password=x", "unknown parameter"),
        ("mongodb://:hunter2@h1:27017", "scheme must be one of"),
    ],
)
def test_bad_uris_are_refused_with_the_password_masked(uri: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as caught:
        parse_uri(uri)
    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h:6379/0?timeout=1", "redis://user:***@h:6379/0?timeout=1"),
        ("redis+sentinel://pw@s1:1,s2:2/svc", "redis+sentinel://***@s1:1,s2:2/svc"),
        ("redis://h:6379/0?password=pw&prefix=a:", "redis://h:6379/0?password=***&prefix=a:"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("memory://", "memory://"),
        ("not a uri", "not a uri"),
    ],
)
def test_mask_uri(uri: str, masked: str) -> None:
    assert mask_uri(uri) == masked


def test_storage_from_uri_refuses_unknown_schemes_masking_the_password() -> None:
    with pytest.raises(StorageError, match="expected memory://") as caught:
        storage_from_uri("memcached://:hunter2@cache:11211")
    assert "hunter2" not in str(caught.value)
    assert "memcached://:***@cache:11211" in str(caught.value)


@pytest.mark.parametrize(
    "uri",
    [
        "redis://127.0.0.1:1/0?timeout=0.5&prefix=p:",
        "rediss://127.0.0.1:1/0?timeout=0.5&prefix=p:",
        "redis+cluster://127.0.0.1:1,127.0.0.1:2?timeout=0.5&prefix=p:",
        "redis+sentinel://127.0.0.1:1/svc?timeout=0.5&prefix=p:",
    ],
)
async def test_storage_from_uri_builds_redis_storage_without_connecting(uri: str) -> None:
    storage = storage_from_uri(uri)
    assert isinstance(storage, RedisStorage)
    assert (storage.prefix, storage.timeout) == ("p:", 0.5)
    await storage.close()


@pytest.mark.parametrize(
    "uri",
    [
        "redis://127.0.0.1:1/0",
        "redis+cluster://127.0.0.1:1",
        "redis+sentinel://127.0.0.1:1/svc",
    ],
)
async def test_timeout_reaches_the_client_and_nothing_is_retried(uri: str) -> None:
    default = RedisStorage(uri)
    storage = RedisStorage(uri + "?timeout=0.05")
    try:
        for store, seconds in ((default, 0.25), (storage, 0.05)):
            client = store.client
            if isinstance(client, RedisCluster):
                kwargs, retry = client.connection_kwargs, client.retry
            else:
                kwargs, retry = client.connection_pool.connection_kwargs, client.get_retry()
            assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == seconds
            assert retry is not None and retry.get_retries() == 0
    finally:
        await default.close()
        await storage.close()
