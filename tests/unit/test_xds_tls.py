"""The xDS certificate reloader: new files are used, broken ones are not."""

from pathlib import Path

import pytest

from federation.cli import pki
from federation.errors import InvalidInputError
from federation.pki import CertificateAuthority
from federation.xds.tls import CertificateReloader, TlsFiles


def _files(tmp_path: Path) -> TlsFiles:
    pki.init(tmp_path, clusters=["a"], hub_ips=["127.0.0.1"])
    hub = tmp_path / "hub"
    return TlsFiles(hub / "tls.crt", hub / "tls.key", hub / "ca.crt")


def test_unchanged_files_give_nothing_new_and_renewed_ones_a_configuration(
    tmp_path: Path,
) -> None:
    files = _files(tmp_path)
    reloads: list[bool] = []
    reloader = CertificateReloader(files, reloads.append)
    assert reloader() is None
    ca = CertificateAuthority.load(
        (tmp_path / "ca.crt").read_bytes(), (tmp_path / "ca.key").read_bytes()
    )
    renewed = ca.hub("federation.local", ips=["127.0.0.1"], names=["a-longer-name.example"])
    renewed.write(files.cert.parent, "tls")
    assert reloader() is not None
    assert reloads == [True]
    assert reloader() is None  # read once per change


def test_a_half_rotated_pair_keeps_the_old_configuration(tmp_path: Path) -> None:
    files = _files(tmp_path)
    reloads: list[bool] = []
    reloader = CertificateReloader(files, reloads.append)
    other = CertificateAuthority.create("other").hub("federation.local", names=["x.example"])
    files.key.write_bytes(other.key_pem + b"\n")  # the key is new, the certificate not yet
    assert reloader() is None
    assert reloads == [False]


def test_unusable_files_at_start_are_an_error(tmp_path: Path) -> None:
    files = _files(tmp_path)
    files.cert.write_text("not a certificate")
    with pytest.raises(InvalidInputError, match="is not PEM"):
        CertificateReloader(files)
    with pytest.raises(InvalidInputError, match="cannot read"):
        CertificateReloader(TlsFiles(tmp_path / "none.crt", files.key, files.client_ca))


def test_a_client_certificate_is_no_serving_certificate(tmp_path: Path) -> None:
    """A cluster's certificate mounted where the hub's should be: refused, clearly."""
    files = _files(tmp_path)
    member = tmp_path / "clusters" / "a"
    mixed = TlsFiles(member / "tls.crt", member / "tls.key", files.client_ca)
    with pytest.raises(InvalidInputError, match="not for serving"):
        CertificateReloader(mixed)
