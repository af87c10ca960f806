"""The bootstrap fedctl prints is accepted by the real Envoy (``--mode validate``)."""

import json
import subprocess
from pathlib import Path

import pytest

from e2e import toolchain
from federation.cli import pki
from federation.cli.bootstrap import BootstrapOptions, BootstrapTls, bootstrap

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("delta", "xds", "tls"),
    [
        (False, "127.0.0.1:18000", True),
        (True, "127.0.0.1:18000", True),
        (False, "localhost:18000", True),
        (False, "127.0.0.1:18000", False),
    ],
)
def test_real_envoy_accepts_the_bootstrap(tmp_path: Path, delta: bool, xds: str, tls: bool) -> None:
    """By IP (STATIC) and by name (STRICT_DNS, as the hub's Service in a pod); with the
    cluster's client certificate (files minted by fedctl pki) and in plain text."""
    pki.init(tmp_path / "pki", clusters=["a"], hub_names=["localhost"])
    files = tmp_path / "pki" / "clusters" / "a"
    config = tmp_path / "bootstrap.json"
    config.write_text(
        json.dumps(
            bootstrap(
                BootstrapOptions(
                    cluster="a",
                    xds_address=xds,
                    admin_address="127.0.0.1:9901",
                    delta=delta,
                    tls=BootstrapTls(
                        str(files / "tls.crt"), str(files / "tls.key"), str(files / "ca.crt")
                    )
                    if tls
                    else None,
                    insecure_plaintext=not tls,
                )
            )
        )
    )
    envoy = toolchain.locate().envoy
    proc = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout + proc.stderr
