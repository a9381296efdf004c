"""The cluster file's Redis URL: one server, or Sentinels and a service."""

from __future__ import annotations

import pytest

from vledger.config.redis import SentinelTarget, check_redis_url
from vledger.node.errors import SettingsError


def test_a_plain_server_has_no_sentinel_target() -> None:
    assert check_redis_url("redis://127.0.0.1:6390/0") is None
    assert check_redis_url("rediss://u:p@h:6380/2") is None


def test_sentinels_service_database_and_acl_user() -> None:
    target = check_redis_url("sentinel://vledger:s%40cret@10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/ledger/3")
    assert target == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)),
        service="ledger",
        db=3,
        username="vledger",
        password="s@cret",
    )


def test_sentinel_port_and_database_default() -> None:
    target = check_redis_url("sentinel://sentinel-1,sentinel-2/vledger")
    assert target == SentinelTarget((("sentinel-1", 26379), ("sentinel-2", 26379)), "vledger", 0)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h/0", "http scheme"),
        ("sentinel:///vledger", "names no Sentinel"),
        ("sentinel://h:26379", "/service"),
        ("sentinel://h:26379/a/b/c", "/service"),
        ("sentinel://h:26379/vledger/x", "is a number"),
        ("sentinel://h:26379/vledger/%C2%B2", "is a number"),  # "²": isdigit, not int()
        ("sentinel://h:26379/vledger/" + "9" * 5000, "is a number"),
        ("sentinel://h:0/vledger", "not a Sentinel host:port"),
        ("sentinel://h:port/vledger", "not a Sentinel host:port"),
        ("sentinel://h:²/vledger", "not a Sentinel host:port"),
        ("sentinel://h:" + "9" * 5000 + "/vledger", "not a Sentinel host:port"),
    ],
)
def test_bad_urls_are_refused_with_a_reason(url: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        check_redis_url(url, "cluster.toml: cluster.redis")
