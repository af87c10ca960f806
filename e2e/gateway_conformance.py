"""The upstream Gateway API conformance suite, unmodified, as the node tier runs it.

The suite is the test binary of ``sigs.k8s.io/gateway-api/conformance`` at the CRDs'
release (:data:`e2e.toolchain.GATEWAY_CONFORMANCE_PINS`), its manifests embedded. It
drives one cluster through a kubeconfig (``-kubeconfig``, else ``$KUBECONFIG``): it
checks that the installed Gateway API CRDs are of its own bundle version, waits for the
GatewayClass (``-gateway-class``) to be accepted, applies its base manifests (Gateways
of that class, echo-basic backends and a CoreDNS in ``gateway-conformance-infra`` and
two more namespaces), waits until every Gateway there is ``Programmed`` and every pod
``Ready``, then runs the tests of the chosen profiles, sending HTTP and gRPC requests to
the address and listener port each Gateway's ``status.addresses`` gives. So wherever it
runs must reach both the apiserver and those addresses.

Its pods run the images :data:`e2e.images.GATEWAY_CONFORMANCE_IMAGES`, under the
references its manifests use (:func:`suite_images` lists those of the manifests).

This module only builds the command line and reads the manifests; it starts nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The profiles the federation's data plane is meant to pass.
PROFILES = ("GATEWAY-HTTP", "GATEWAY-GRPC")
#: Each profile's core features (``conformance/utils/suite/profiles.go``): running a
#: profile turns them on whatever ``-supported-features`` says.
PROFILE_CORE_FEATURES: Mapping[str, tuple[str, ...]] = {
    "GATEWAY-HTTP": ("Gateway", "ReferenceGrant", "HTTPRoute"),
    "GATEWAY-GRPC": ("Gateway", "ReferenceGrant", "GRPCRoute"),
    "GATEWAY-TLS": ("Gateway", "ReferenceGrant", "TLSRoute"),
}
#: Folders of the conformance module whose manifests the Gateway profiles apply
#: (``mesh/`` is the MESH profiles').
GATEWAY_MANIFEST_DIRS = ("base", "tests")
#: The test function of ``conformance_test.go``.
TEST_NAME = "TestConformance"


@dataclass(frozen=True)
class Implementation:
    """Who the report is about: the suite refuses to write a report without all five."""

    organization: str
    project: str
    url: str
    version: str
    contact: tuple[str, ...]


def suite_argv(
    binary: Path,
    *,
    kubeconfig: Path,
    gateway_class: str,
    profiles: Sequence[str] = PROFILES,
    supported_features: Iterable[str] | None = (),
    exempt_features: Iterable[str] = (),
    skip_tests: Iterable[str] = (),
    run_test: str | None = None,
    report: Path | None = None,
    implementation: Implementation | None = None,
    timeout_s: int = 3600,
    debug: bool = False,
    cleanup_base_resources: bool = True,
) -> list[str]:
    """The suite's command line.

    ``supported_features`` None: none are given, and the suite reads them from the
    GatewayClass's ``status.supportedFeatures`` (it stops when that is empty). Empty:
    the profiles' core features are passed.
    """
    if not profiles and run_test is None:
        raise ValueError("name at least one conformance profile, or a test to run")
    unknown = [p for p in profiles if p not in PROFILE_CORE_FEATURES]
    if unknown:
        raise ValueError(f"unknown Gateway conformance profiles: {', '.join(unknown)}")
    if report is not None and implementation is None:
        raise ValueError("the suite writes a report only with the implementation's details")
    if implementation is not None and not all(
        (implementation.organization, implementation.project, implementation.url,
         implementation.version, implementation.contact)
    ):  # fmt: skip
        raise ValueError(f"every detail of the implementation is required: {implementation}")
    argv = [
        str(binary),
        f"-test.run=^{TEST_NAME}$",
        "-test.v",
        f"-test.timeout={timeout_s}s",
        f"-kubeconfig={kubeconfig}",
        f"-gateway-class={gateway_class}",
    ]
    if supported_features is not None:
        features = set(supported_features) or {
            f for p in profiles for f in PROFILE_CORE_FEATURES[p]
        }
        argv.append(f"-supported-features={_joined(features)}")
    if profiles:
        argv.append(f"-conformance-profiles={','.join(profiles)}")
    if exempt := set(exempt_features):
        argv.append(f"-exempt-features={_joined(exempt)}")
    if skips := set(skip_tests):
        argv.append(f"-skip-tests={_joined(skips)}")
    if run_test is not None:
        argv.append(f"-run-test={run_test}")
    if report is not None:
        argv.append(f"-report-output={report}")
    if implementation is not None:
        argv += [
            f"-organization={implementation.organization}",
            f"-project={implementation.project}",
            f"-url={implementation.url}",
            f"-version={implementation.version}",
            f"-contact={','.join(implementation.contact)}",
        ]
    if debug:
        argv.append("-debug")
    if not cleanup_base_resources:
        argv.append("-cleanup-base-resources=false")
    return argv


def _joined(values: Iterable[str]) -> str:
    return ",".join(sorted(values))


# --- the images the suite's manifests use ---------------------------------------------

_IMAGE = re.compile(r"""^\s*(?:-\s+)?image:\s*["']?([^\s"'#]+)""")


def image_references(text: str) -> list[tuple[int, str]]:
    """Every ``image:`` of a YAML text: (line number, reference)."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _IMAGE.match(line)
        if match:
            out.append((number, match.group(1)))
    return out


def suite_images(
    module_dir: Path, subdirs: Sequence[str] = GATEWAY_MANIFEST_DIRS
) -> dict[str, list[str]]:
    """The images the manifests under ``subdirs`` of the conformance module use, each
    with where (``base/manifests.yaml:168``)."""
    found: dict[str, list[str]] = {}
    for subdir in subdirs:
        for path in sorted((module_dir / subdir).rglob("*.yaml")):
            where = path.relative_to(module_dir).as_posix()
            for number, ref in image_references(path.read_text()):
                found.setdefault(ref, []).append(f"{where}:{number}")
    return found


def unprovided(needed: Mapping[str, Sequence[str]], provided: Iterable[str]) -> list[str]:
    """The references of ``needed`` that no provided image has, with where each is used."""
    have = set(provided)
    return [
        f"{ref} ({', '.join(needed[ref][:3])}{', ...' if len(needed[ref]) > 3 else ''})"
        for ref in sorted(needed)
        if ref not in have
    ]


# --- what a run says: the report and the suite's output -------------------------------


@dataclass
class LevelTotals:
    """One support level (core or extended) of a profile in the ConformanceReport."""

    result: str = ""
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failed_tests: list[str] = field(default_factory=list)
    skipped_tests: list[str] = field(default_factory=list)


@dataclass
class ProfileTotals:
    """One profile of the ConformanceReport (``profiles[]``)."""

    name: str
    summary: str
    core: LevelTotals
    extended: LevelTotals | None = None
    supported_features: list[str] = field(default_factory=list)
    unsupported_features: list[str] = field(default_factory=list)


def _level(entry: Mapping[str, Any] | None) -> LevelTotals:
    entry = entry or {}
    # The suite's Statistics fields have no JSON tags: Passed, Failed, Skipped.
    stats = {str(k).lower(): v for k, v in (entry.get("statistics") or {}).items()}
    return LevelTotals(
        result=str(entry.get("result") or ""),
        passed=int(stats.get("passed") or 0),
        failed=int(stats.get("failed") or 0),
        skipped=int(stats.get("skipped") or 0),
        failed_tests=list(entry.get("failedTests") or []),
        skipped_tests=list(entry.get("skippedTests") or []),
    )


def read_report(report: Mapping[str, Any]) -> dict[str, ProfileTotals]:
    """The profiles of a ConformanceReport (``report.yaml``, parsed), by name."""
    out = {}
    for profile in report.get("profiles") or []:
        extended = profile.get("extended")
        out[profile["name"]] = ProfileTotals(
            name=profile["name"],
            summary=str(profile.get("summary") or ""),
            core=_level(profile.get("core")),
            extended=None if extended is None else _level(extended),
            supported_features=list((extended or {}).get("supportedFeatures") or []),
            unsupported_features=list((extended or {}).get("unsupportedFeatures") or []),
        )
    return out


_HEADER = re.compile(r"^=== (?:RUN|PAUSE|CONT|NAME)\s+(\S+)")
_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+) \(")
_LOCATION = re.compile(r"^\s*[\w.-]+\.go:\d+: ?(?:\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-][\d:]+): )?(.*)$")
_TESTIFY = re.compile(r"^\s*Error:\s*(.*)$")
_TESTIFY_MESSAGES = re.compile(r"^\s*Messages:\s*(.*)$")


@dataclass
class SuiteOutput:
    """What ``go test -v`` printed: each (sub)test's result and the lines it logged.

    The testing package streams every test's output with a header (``=== RUN``,
    ``=== CONT``, ``=== NAME``) whenever the test that prints changes, so each line is
    attributed to the test under the last header.
    """

    results: dict[str, str] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SuiteOutput:
        out = cls()
        current = ""
        for line in text.splitlines():
            if header := _HEADER.match(line):
                current = header.group(1)
                continue
            if result := _RESULT.match(line):
                out.results[result.group(2)] = result.group(1)
                continue
            if line.strip():
                out.lines.setdefault(current, []).append(line)
        return out

    def tests(self, parent: str = TEST_NAME) -> dict[str, str]:
        """The result of each direct subtest of ``parent`` (the conformance tests), by
        short name."""
        prefix = f"{parent}/"
        return {
            name.removeprefix(prefix): result
            for name, result in self.results.items()
            if name.startswith(prefix) and "/" not in name.removeprefix(prefix)
        }

    def first_error(self, short_name: str, parent: str = TEST_NAME) -> str:
        """The first error of a failed conformance test: testify's ``Error:`` (with its
        continuation lines and ``Messages:``) in the test or its subtests, and the last
        line the test logged before it (what a wait last saw); else the last line a
        failed one logged."""
        name = f"{parent}/{short_name}"
        family = [t for t in self.lines if t == name or t.startswith(f"{name}/")]
        for test in family:
            lines = self.lines[test]
            for i, line in enumerate(lines):
                if found := _TESTIFY.match(line):
                    return _shorten(_testify_error(lines, i, found.group(1)))
        failed = [t for t in family if self.results.get(t) == "FAIL"] or family
        for test in reversed(failed):
            for line in reversed(self.lines[test]):
                if (located := _LOCATION.match(line)) and located.group(1).strip():
                    return _shorten(located.group(1).strip())
        return "(no error line found in the output)"


#: Lines after testify's ``Error:`` that continue it (an empty label column).
_TESTIFY_CONTINUED = re.compile(r"^\s*\t {4,}\t(.*)$")
_TESTIFY_LABEL = re.compile(r"^\s*\t[A-Z][\w ]*:\s*\t")
ERROR_CHARS = 1200


def _testify_error(lines: Sequence[str], at: int, first: str) -> str:
    parts = [first.strip()]
    messages = ""
    for line in lines[at + 1 : at + 40]:
        if more := _TESTIFY_MESSAGES.match(line):
            messages = more.group(1).strip()
            break
        if _TESTIFY_LABEL.match(line):
            continue
        if (continued := _TESTIFY_CONTINUED.match(line)) and not messages:
            if len(parts) < 4:
                parts.append(continued.group(1).strip())
            continue
        if _LOCATION.match(line):
            break
    error = " ".join(p for p in parts if p)
    if messages:
        error += f" ({messages})"
    for line in reversed(lines[:at]):
        located = _LOCATION.match(line)
        if located and located.group(1).strip():
            return f"{error}; last logged: {located.group(1).strip()}"
    return error


def _shorten(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."
