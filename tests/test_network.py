"""Loopback recognition: what the servers medlens starts (serve, the PACS storage listener) treat as this machine."""

import pytest

from medlens.network import is_loopback


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.org", "localhost.example", ""])
def test_other_hosts_are_not_loopback(host):
    assert not is_loopback(host)
