"""The client address behind trusted proxies: the right-most untrusted hop, never what a client claims."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.clients import client_address, limit_key, parse_address, parse_networks
from gateway.settings import GatewaySettings

INGRESS = parse_networks(["10.0.0.0/8", "fd00::/8"])


def test_without_trusted_proxies_the_socket_peer_is_the_client_whatever_it_forwards():
    assert client_address("203.0.113.7", ["198.51.100.1"], ()) == "203.0.113.7"
    assert client_address("10.1.2.3", ["198.51.100.1"], ()) == "10.1.2.3"


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client_even_when_it_forwards():
    assert client_address("203.0.113.7", ["198.51.100.1, 10.0.0.5"], INGRESS) == "203.0.113.7"


def test_through_a_trusted_proxy_the_right_most_untrusted_address_is_the_client():
    # The client wrote 1.1.1.1 itself; the ingress appended the peer it saw, 198.51.100.9.
    assert client_address("10.0.0.5", ["1.1.1.1, 198.51.100.9"], INGRESS) == "198.51.100.9"
    # Two trusted hops, and the header split over two lines: the same answer.
    assert client_address("10.0.0.5", ["1.1.1.1", "198.51.100.9, 10.0.0.7"], INGRESS) == "198.51.100.9"


def test_when_every_hop_is_trusted_the_left_most_is_the_client():
    assert client_address("10.0.0.5", ["10.0.0.9, 10.0.0.7"], INGRESS) == "10.0.0.9"
    assert client_address("10.0.0.5", [], INGRESS) == "10.0.0.5"


@pytest.mark.parametrize("garbage", ["unknown", "evil.example", "", "1.2.3.4.5", "<script>"])
def test_garbage_in_the_chain_stops_at_the_last_trusted_hop(garbage):
    assert client_address("10.0.0.5", [f"198.51.100.9, {garbage}, 10.0.0.7"], INGRESS) in {
        "10.0.0.7",
        "198.51.100.9",
    }
    assert client_address("10.0.0.5", [f"{garbage}"], INGRESS) == "10.0.0.5"


def test_addresses_with_ports_brackets_and_mapped_ipv4_are_understood():
    assert parse_address("198.51.100.9:4711") == parse_address("198.51.100.9")
    assert str(parse_address("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_address("::ffff:198.51.100.9")) == "198.51.100.9"
    assert client_address("fd00::1", ["2001:db8::7"], INGRESS) == "2001:db8::7"
    assert client_address("::ffff:10.0.0.5", ["198.51.100.9"], INGRESS) == "198.51.100.9"


def test_an_ipv6_client_is_limited_by_its_slash_64_which_it_controls_whole():
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("198.51.100.9") == "198.51.100.9"


def test_the_settings_take_cidrs_and_origins_and_refuse_what_would_be_unsafe():
    settings = GatewaySettings(
        trusted_proxies=["10.0.0.0/8", "192.168.1.7"],
        public_base_url="HTTPS://API.City.Example/",
        cors_origins=["https://screens.city.example", "http://localhost:5173"],
    )
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.1.7/32"]
    assert settings.public_base_url == "https://api.city.example"
    assert settings.cors_origins == ["https://screens.city.example", "http://localhost:5173"]
    for bad in (
        {"trusted_proxies": ["not-a-network"]},
        {"public_base_url": "https://api.city.example/prefix"},
        {"public_base_url": "ftp://api.city.example"},
        {"cors_origins": ["*"]},
        {"cors_origins": ["https://screens.city.example/app"]},
        {"internal_port": 8000, "port": 8000},
    ):
        with pytest.raises(ValidationError):
            GatewaySettings(**bad)
