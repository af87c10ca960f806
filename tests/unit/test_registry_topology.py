"""Registry URLs: which Redis they name (one server, a Redis Cluster, a sentinel set),
and the clear errors for the ones that name none."""

from __future__ import annotations

import pytest

from federation.errors import InvalidInputError
from federation.registry import location, topology
from federation.registry.topology import Topology, parse


def test_a_cluster_url_names_its_seed_nodes_and_credentials() -> None:
    parsed = parse("redis+cluster://agent-a:p%40ss@10.0.0.1:7000,[::1]:7001")
    assert parsed == Topology(
        "cluster", False, (("10.0.0.1", 7000), ("::1", 7001)), "agent-a", "p@ss"
    )
    assert parse("rediss+cluster://u:p@h:1").tls is True


def test_a_sentinel_url_names_its_sentinels_service_database_and_their_password() -> None:
    parsed = parse("rediss+sentinel://hub:pw@s1:26379,s2:26379/registry/2?sentinel_password=sp")
    assert (parsed.mode, parsed.tls, parsed.service, parsed.db) == ("sentinel", True, "registry", 2)
    assert parsed.nodes == (("s1", 26379), ("s2", 26379))
    assert (parsed.username, parsed.password, parsed.sentinel_password) == ("hub", "pw", "sp")
    assert parse("redis+sentinel://s1:26379/registry").db == 0


def test_a_password_never_shows_in_repr_or_errors() -> None:
    assert "secret" not in repr(parse("redis+cluster://u:secret@h:1"))
    # An unencoded "/" ends the address early: the error must not quote what it got.
    with pytest.raises(InvalidInputError) as caught:
        parse("redis+cluster://u:sec/ret@h:1")
    assert "sec" not in str(caught.value) and "percent-encoded" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://u:p@", "needs HOST:PORT"),
        ("redis+cluster://u:p@h", "a node address is not HOST:PORT"),
        ("redis+cluster://u:p@h:99999", "is not HOST:PORT"),
        ("redis+cluster://u:p@h:1/3", "database 0 only"),
        ("redis+cluster://u:p@h:1?sentinel_password=x", "take no sentinel_password"),
        ("redis+sentinel://u:p@h:1", "names the service"),
        ("redis+sentinel://u:p@h:1/a/b/c", "names the service"),
        ("redis+sentinel://u:p@h:1/svc/x", "database 'x' is not a number"),
        ("redis+sentinel://u:p@h:1/svc?master=x", "take no master parameter"),
        ("memcached://h:1", "unknown scheme"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse(url)


def test_locations_accept_every_topology_and_tls_follows_the_scheme() -> None:
    for scheme in topology.SCHEMES:
        url = f"{scheme}://u:p@h:1/svc" if "sentinel" in scheme else f"{scheme}://u:p@h:1"
        if scheme == "unix":
            url = "unix:///run/redis.sock"
        found = location.location_of(url, {})
        assert found.tls == scheme.startswith("rediss")
    with pytest.raises(InvalidInputError, match="REGISTRY_URL: a sentinel URL names"):
        location.location_of("redis+sentinel://u:p@h:1", {})


def test_tls_files_with_a_clear_text_cluster_url_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="connects without TLS"):
        location.location_of(
            "redis+cluster://u:p@h:1", {location.CA_FILE_ENV: "/nonexistent/ca.crt"}
        )


async def test_errors_name_a_cluster_or_sentinel_registry_by_where_it_is() -> None:
    """TLS errors name the registry from its client's connection arguments: a cluster or
    sentinel client has no host of its own there."""
    for url, where in [
        ("redis+cluster://u:p@10.0.0.1:7000", "Redis Cluster (via 10.0.0.1:7000)"),
        ("redis+sentinel://u:p@s:26379/registry", "the primary of sentinel service registry"),
    ]:
        client = topology.client_from_url(url, {})
        try:
            assert topology.connection_kwargs(client)["address"] == where
        finally:
            await client.aclose()


async def test_tls_comes_from_the_scheme_even_when_options_say_ssl() -> None:
    """The admin's options of a TLS-only server carry ``ssl=True`` besides its
    ``rediss://`` URL; redis-py refuses both together, so the scheme decides."""
    for url in ("rediss://u:p@h:1/0", "rediss+cluster://u:p@h:1"):
        client = topology.client_from_url(url, {"ssl": True, "ssl_cert_reqs": "required"})
        try:
            assert topology.uses_tls(client)
        finally:
            await client.aclose()
