"""``fedctl pki``: a small clusterset PKI for people without one of their own.

    fedctl pki init --dir pki --hub-name federation-hub.federation.svc [--hub-ip IP] \\
        --cluster a --cluster b [--trust-domain federation.local] [--days 365]
    fedctl pki add-cluster --dir pki c        # a new member, or a renewed certificate
    fedctl pki secret --dir pki hub|clusters/a|agents/a [--name N] [--namespace NS]

``init`` writes a CA (``ca.crt``, ``ca.key``: keep the key offline), the hub's serving
certificate, one client certificate per cluster and each cluster's agent's serving
certificate (the agent serves its Gateways' Envoys their basic auth and API key
credentials), each in a directory shaped like the Secret the charts mount (``tls.crt``,
``tls.key``, ``ca.crt``)::

    pki/ca.crt  pki/ca.key  pki/trust-domain
    pki/hub/{tls.crt,tls.key,ca.crt}
    pki/clusters/<id>/{tls.crt,tls.key,ca.crt}
    pki/agents/<id>/{tls.crt,tls.key,ca.crt}

so ``kubectl create secret generic federation-hub-xds-tls --from-file=pki/hub`` makes
the hub's Secret (``secret`` prints it as YAML: ``federation-hub-xds-tls`` for the hub,
``federation-xds-tls`` for a cluster, the charts' defaults). A cluster's certificate
names it with the URI ``spiffe://<trust domain>/cluster/<id>``, its agent's with
``spiffe://<trust domain>/cluster/<id>/agent`` (what its Envoys check); the hub's carries
``spiffe://<trust domain>/hub`` and the DNS names and addresses Envoys dial.
Certificates from another issuer (for example cert-manager) work the same when they
carry those URIs. Keys are written with mode 0600 and never overwritten by ``init``.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from federation.errors import InvalidInputError
from federation.pki import DEFAULT_TRUST_DOMAIN, CertificateAuthority, KeyPair, check_trust_domain

CA_CERT, CA_KEY, TRUST_DOMAIN_FILE = "ca.crt", "ca.key", "trust-domain"
#: The Secrets the charts read by default: the hub's serving certificate, and a member
#: cluster's client certificate (two names: the hub's cluster is often a member too).
HUB_SECRET, CLUSTER_SECRET = "federation-hub-xds-tls", "federation-xds-tls"
#: The agent's serving certificate for its Gateways' Envoys.
AGENT_SECRET = "federation-agent-tls"


def default_secret_name(who: str) -> str:
    """The Secret name the charts read for ``who`` (hub, clusters/<id>, agents/<id>)."""
    if who == "hub":
        return HUB_SECRET
    return AGENT_SECRET if who.startswith("agents/") else CLUSTER_SECRET


def _write(directory: Path, pair: KeyPair, ca_pem: bytes) -> Path:
    pair.write(directory, "tls")
    (directory / CA_CERT).write_bytes(ca_pem)
    return directory


def init(
    directory: Path,
    *,
    clusters: Sequence[str],
    hub_names: Sequence[str] = (),
    hub_ips: Sequence[str] = (),
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    days: int = 365,
) -> list[Path]:
    """Mint the CA, the hub's certificate and each cluster's; the directories written."""
    if (directory / CA_KEY).exists():
        raise InvalidInputError(
            f"{directory / CA_KEY} exists: this directory already holds a PKI "
            "(add members with 'fedctl pki add-cluster')"
        )
    trust_domain = check_trust_domain(trust_domain)
    validity = datetime.timedelta(days=days)
    ca = CertificateAuthority.create(f"federation clusterset CA ({trust_domain})", validity)
    hub = ca.hub(trust_domain, names=hub_names, ips=hub_ips, validity=validity)
    members = [(c, ca.cluster(trust_domain, c, validity)) for c in clusters]
    agents = [(c, ca.agent(trust_domain, c, validity=validity)) for c in clusters]
    directory.mkdir(parents=True, exist_ok=True)
    KeyPair(ca.cert_pem, ca.key_pem).write(directory, "ca")
    (directory / TRUST_DOMAIN_FILE).write_text(trust_domain + "\n")
    written = [_write(directory / "hub", hub, ca.cert_pem)]
    written += [_write(directory / "clusters" / c, pair, ca.cert_pem) for c, pair in members]
    written += [_write(directory / "agents" / c, pair, ca.cert_pem) for c, pair in agents]
    return written


def add_cluster(directory: Path, cluster: str, *, days: int = 365) -> list[Path]:
    """A (new) client certificate for ``cluster`` and its agent's serving certificate,
    signed by the directory's CA; the directories written."""
    try:
        ca = CertificateAuthority.load(
            (directory / CA_CERT).read_bytes(), (directory / CA_KEY).read_bytes()
        )
        trust_domain = (directory / TRUST_DOMAIN_FILE).read_text().strip()
    except OSError as err:
        raise InvalidInputError(f"{directory} holds no PKI from 'fedctl pki init': {err}") from err
    validity = datetime.timedelta(days=days)
    pair = ca.cluster(trust_domain, cluster, validity)
    agent = ca.agent(trust_domain, cluster, validity=validity)
    return [
        _write(directory / "clusters" / cluster, pair, ca.cert_pem),
        _write(directory / "agents" / cluster, agent, ca.cert_pem),
    ]


def secret_manifest(directory: Path, who: str, name: str, namespace: str) -> dict[str, Any]:
    """A Secret with ``who``'s (``hub``, ``clusters/<id>`` or ``agents/<id>``)
    tls.crt, tls.key and ca.crt."""
    source = directory / who
    data = {}
    for key in ("tls.crt", "tls.key", CA_CERT):
        try:
            data[key] = base64.b64encode((source / key).read_bytes()).decode()
        except OSError as err:
            raise InvalidInputError(f"cannot read {source / key}: {err}") from err
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": data,
    }
