"""The registry URL and its TLS files come from the environment, never argv
(federation.registry.location)."""

from __future__ import annotations

import pytest

from e2e.pki import CertificateAuthority
from federation.errors import InvalidInputError
from federation.registry.location import (
    CA_FILE_ENV,
    CERT_FILE_ENV,
    KEY_FILE_ENV,
    REGISTRY_URL_ENV,
    location_of,
    registry_location,
    registry_url,
)


def test_the_url_is_read_from_the_environment() -> None:
    url = "redis://agent-a:secret@127.0.0.1:6379/0"
    assert registry_url({REGISTRY_URL_ENV: f" {url}\n"}) == url
    assert registry_url({REGISTRY_URL_ENV: "rediss://hub:x@redis.example:6380/0"})


def test_a_missing_url_says_where_it_belongs() -> None:
    with pytest.raises(InvalidInputError, match=f"{REGISTRY_URL_ENV} is not set.*redis://"):
        registry_url({})


def test_a_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="must be a redis://"):
        registry_url({REGISTRY_URL_ENV: "http://127.0.0.1:6379"})
    with pytest.raises(InvalidInputError, match="one without a scheme"):
        registry_url({REGISTRY_URL_ENV: "127.0.0.1:6379"})


def test_neither_program_takes_the_url_as_a_flag() -> None:
    from agents.main import parse_args as agent_args
    from federation.cli.hub import parse_args as hub_args

    for parse in (agent_args, hub_args):
        with pytest.raises(SystemExit):
            parse(["--registry", "redis://agent-a:secret@127.0.0.1:6379/0"])


# --- TLS settings (FEDERATION_REGISTRY_CA_FILE, _CERT_FILE, _KEY_FILE) ----------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA and a client certificate with its key, as files."""
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority("registry-ca")
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    cert, key = ca.client("agent").write(directory, "client")
    other_key = CertificateAuthority("other").client("x").write(directory, "other")[1]
    return {"ca": str(directory / "ca.crt"), "cert": str(cert), "key": str(key),
            "other_key": str(other_key), "dir": str(directory)}  # fmt: skip


TLS_URL = "rediss://agent-a:secret@redis.example:6380/0"


def test_rediss_verifies_the_server_always(pki: dict[str, str]) -> None:
    # Without a CA file: the system's trusted CAs, still required and host-checked.
    bare = registry_location({REGISTRY_URL_ENV: TLS_URL})
    assert bare.tls and bare.ca_file is None
    assert bare.client_options() == {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    full = registry_location(
        {
            REGISTRY_URL_ENV: TLS_URL,
            CA_FILE_ENV: pki["ca"],
            CERT_FILE_ENV: pki["cert"],
            KEY_FILE_ENV: f" {pki['key']}\n",
        }
    )
    assert full.client_options() == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": pki["ca"],
        "ssl_certfile": pki["cert"],
        "ssl_keyfile": pki["key"],
    }
    assert full.address == "rediss://redis.example:6380"
    assert "secret" not in repr(full)


def test_without_tls_there_are_no_options() -> None:
    location = registry_location({REGISTRY_URL_ENV: "redis://a:secret@127.0.0.1:6379/0"})
    assert not location.tls and location.client_options() == {}


def test_tls_files_with_a_clear_text_url_are_refused(pki: dict[str, str]) -> None:
    for url in ("redis://a:secret@127.0.0.1:6379/0", "unix:///run/redis.sock"):
        with pytest.raises(InvalidInputError, match=f"{CA_FILE_ENV} is set but .*rediss://"):
            registry_location({REGISTRY_URL_ENV: url, CA_FILE_ENV: pki["ca"]})


def test_a_certificate_needs_its_key(pki: dict[str, str]) -> None:
    env = {REGISTRY_URL_ENV: TLS_URL, CA_FILE_ENV: pki["ca"]}
    with pytest.raises(InvalidInputError, match=f"{CERT_FILE_ENV} is set without {KEY_FILE_ENV}"):
        registry_location({**env, CERT_FILE_ENV: pki["cert"]})
    with pytest.raises(InvalidInputError, match=f"{KEY_FILE_ENV} is set without {CERT_FILE_ENV}"):
        registry_location({**env, KEY_FILE_ENV: pki["key"]})
    with pytest.raises(InvalidInputError, match="not a PEM certificate and its unencrypted"):
        registry_location({**env, CERT_FILE_ENV: pki["cert"], KEY_FILE_ENV: pki["other_key"]})


def test_missing_or_unparsable_files_name_their_variable(pki: dict[str, str]) -> None:
    missing = f"{pki['dir']}/absent.crt"
    with pytest.raises(InvalidInputError, match=f"{CA_FILE_ENV}: cannot read {missing}"):
        registry_location({REGISTRY_URL_ENV: TLS_URL, CA_FILE_ENV: missing})
    with pytest.raises(InvalidInputError, match=f"{CA_FILE_ENV}: .* holds no PEM CA"):
        registry_location({REGISTRY_URL_ENV: TLS_URL, CA_FILE_ENV: pki["key"]})
    with pytest.raises(InvalidInputError, match=f"{KEY_FILE_ENV}: cannot read"):
        registry_location(
            {REGISTRY_URL_ENV: TLS_URL, CERT_FILE_ENV: pki["cert"], KEY_FILE_ENV: missing}
        )


def test_verification_cannot_be_turned_off_in_the_url() -> None:
    for query in ("ssl_cert_reqs=none", "ssl_check_hostname=false", "ssl_ca_certs=/x"):
        with pytest.raises(InvalidInputError, match="must not set ssl_"):
            registry_location({REGISTRY_URL_ENV: f"{TLS_URL}?{query}"})


def test_admin_connections_read_the_same_variables(pki: dict[str, str]) -> None:
    from federation.cli.members import ADMIN_URL_ENV

    location = registry_location(
        {ADMIN_URL_ENV: TLS_URL, CA_FILE_ENV: pki["ca"]}, ADMIN_URL_ENV, "an admin's"
    )
    assert location.client_options()["ssl_ca_certs"] == pki["ca"]
    with pytest.raises(InvalidInputError, match=f"but {ADMIN_URL_ENV} is a redis://"):
        location_of("redis://admin:x@h:6379/0", {CA_FILE_ENV: pki["ca"]}, ADMIN_URL_ENV)
