"""The pure parts of the node tier: forwarding rules, OCI archives, names that tell an
environment's owner, and the machine-wide sysctl bookkeeping."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from e2e import images, owners
from e2e.netforward import Rule
from e2e.sysctls import Sysctls


def test_forward_rules_parse() -> None:
    rule = Rule.parse("-,127.0.0.1:4000,/run/netns/fed-1-a,10.250.0.11:6443")
    assert rule == Rule("-", ("127.0.0.1", 4000), "/run/netns/fed-1-a", ("10.250.0.11", 6443))


@pytest.mark.parametrize(
    "text", ["-,127.0.0.1:4000,-", "-,127.0.0.1,-,10.0.0.1:80", "-,:80,-,10.0.0.1:80"]
)
def test_bad_forward_rules_say_what_is_wanted(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="LISTEN_NS,HOST:PORT"):
        Rule.parse(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("-,10.1.2.3:80,/run/netns/x,10.0.0.1:80", "not a loopback address"),
        ("/run/netns/x,10.0.0.1:80,-,192.168.1.1:80", "not a loopback address"),
        ("-,127.0.0.1:80,/run/netns/x,example.com:80", "not an IPv4 address"),
        ("-,127.0.0.1:70000,/run/netns/x,10.0.0.1:80", "out of range"),
    ],
)
def test_forwards_on_the_host_side_are_loopback_only(text: str, why: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        Rule.parse(text)


def test_names_tell_the_owning_process() -> None:
    assert owners.owner_of("fed-1234-1-a") == 1234
    assert owners.owner_of("federation-env-99-x1y2") == 99
    assert owners.owner_of("cni-1234") is None
    first, second = owners.new_token(), owners.new_token()
    assert first != second
    assert first.split("-")[0] == str(os.getpid())


@pytest.fixture
def blob_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDERATION_CACHE", str(tmp_path))
    return tmp_path


def test_an_oci_archive_names_each_image_and_holds_each_blob_once(blob_store: Path) -> None:
    shared = images._files_layer("shared", {"/etc/motd": b"hello\n"})
    one = images.Image("example.local/one:1", (shared,), entrypoint=("/bin/true",))
    two = images.Image("example.local/two:2", (shared, images._files_layer("two", {"/two": b"2"})))
    out = io.BytesIO()
    images.write_archive([one, two], out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(
            tar.extractfile(  # type: ignore[arg-type]
                f"blobs/sha256/{one.manifest().digest.removeprefix('sha256:')}"
            )
        )
    refs = {m["annotations"]["io.containerd.image.name"]: m for m in index["manifests"]}
    assert set(refs) == {"example.local/one:1", "example.local/two:2"}
    assert refs["example.local/one:1"]["annotations"]["org.opencontainers.image.ref.name"] == "1"
    assert names.count(f"blobs/sha256/{shared.digest.removeprefix('sha256:')}") == 1
    assert [layer["digest"] for layer in manifest["layers"]] == [shared.digest]
    assert names[:2] == ["oci-layout", "index.json"]


def test_a_files_layer_is_content_addressed_and_reused(blob_store: Path) -> None:
    first = images._files_layer("x", {"/opt/a": b"1"})
    again = images._files_layer("x", {"/opt/a": b"1"})
    other = images._files_layer("x", {"/opt/a": b"2"})
    assert first == again
    assert first.digest != other.digest
    with tarfile.open(first.path) as tar:
        assert tar.getnames() == ["opt", "opt/a"]
        assert tar.getmember("opt").isdir()


@pytest.fixture
def fake_sysctls(tmp_path: Path) -> Sysctls:
    proc_sys = tmp_path / "proc-sys"
    (proc_sys / "kernel").mkdir(parents=True)
    (proc_sys / "kernel" / "panic").write_text("0\n")
    return Sysctls(record=tmp_path / "record.json", proc_sys=proc_sys)


def _set(sysctls: Sysctls, value: str) -> None:
    (sysctls.proc_sys / "kernel" / "panic").write_text(value)


def test_sysctls_come_back_when_the_last_environment_stops(fake_sysctls: Sysctls) -> None:
    first, second = f"{os.getpid()}-1", f"{os.getpid()}-2"  # two environments of a process
    other = subprocess.Popen(["sleep", "30"])  # and one of another process
    try:
        fake_sysctls.acquire(first, ["kernel/panic"])
        _set(fake_sysctls, "10")  # what a kubelet does
        fake_sysctls.acquire(second, ["kernel/panic"])  # sees 10, keeps 0
        fake_sysctls.acquire(f"{other.pid}-1", ["kernel/panic"])
        fake_sysctls.release(first)
        assert fake_sysctls.read("kernel/panic") == "10"  # the others still run
        fake_sysctls.release(second)
        assert fake_sysctls.read("kernel/panic") == "10"
        fake_sysctls.release(f"{other.pid}-1")
        assert fake_sysctls.read("kernel/panic") == "0"
        assert not fake_sysctls.record.exists()
    finally:
        other.kill()
        other.wait()


def test_values_from_an_environment_killed_without_teardown_are_restored_later(
    fake_sysctls: Sysctls,
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    fake_sysctls.acquire(f"{gone.pid}-1", ["kernel/panic"])
    _set(fake_sysctls, "10")  # its kubelet's, never put back
    fake_sysctls.acquire(f"{os.getpid()}-1", ["kernel/panic"])  # the dead owner is pruned
    fake_sysctls.release(f"{os.getpid()}-1")
    assert fake_sysctls.read("kernel/panic") == "0"  # the machine's own value
    assert not fake_sysctls.record.exists()


def _dist(site: Path, name: str, *requires: str) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_requirements_are_completed_for_the_images_python(tmp_path: Path) -> None:
    """pip evaluates markers for this machine's Python; the images run Debian's 3.11.2,
    for which redis-py needs async-timeout (it failed at import in a pod)."""
    _dist(
        tmp_path, "redis",
        'async-timeout>=4.0.3; python_full_version < "3.11.3"',
        'hiredis>=3; extra == "hiredis"',
        'pywin32; sys_platform == "win32"',
        "present",
    )  # fmt: skip
    _dist(tmp_path, "present")
    assert images._missing_for_image(tmp_path) == ["async-timeout>=4.0.3"]
