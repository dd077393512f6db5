"""REDIS_SENTINELS as the environment gives it (mailcommon.settings.CommonSettings)."""

from __future__ import annotations

import pytest
from mailcommon.settings import CommonSettings
from pydantic import ValidationError


def settings(**env: str) -> CommonSettings:
    return CommonSettings(mail_domains="example.test", **env)


def test_sentinels_are_a_list_of_host_port() -> None:
    assert settings().redis_sentinels == []
    assert settings(redis_sentinels="").redis_sentinels == []
    parsed = settings(redis_sentinels="s1:26379, s2:26379,[::1]:26380")
    assert parsed.redis_sentinels == ["s1:26379", "s2:26379", "[::1]:26380"]
    assert parsed.redis_sentinel_master == "mymaster"


@pytest.mark.parametrize("bad", ["s1", "s1:", ":26379", "s1:port", "s1:70000"])
def test_a_sentinel_without_a_usable_port_stops_start_up(bad: str) -> None:
    with pytest.raises(ValidationError, match="REDIS_SENTINELS"):
        settings(redis_sentinels=f"s0:26379,{bad}")
