"""The agent's Kubernetes client: raw JSON over aiohttp.

Used by the export publisher, the import reconciler, the status writer and the
start-up identity check. Configuration (kubeconfig or in-cluster, TLS material,
bearer tokens and their refresh) comes from the ``kubernetes`` package; requests
go out on one pooled aiohttp session in the agent's own event loop, so hundreds
can be in flight at once without a thread each (a bulk import writes thousands
of objects). Bodies are raw JSON (no generated models): the agent's pure
functions work on Kubernetes JSON, and skipping model validation keeps thousands
of objects cheap. Errors become :class:`KubeError`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import tenacity
from kubernetes import config as kube_config
from kubernetes.client import Configuration

from federation.errors import FederationError
from federation.retry import Backoff, retry_call

log = logging.getLogger(__name__)

FIELD_MANAGER = "federation-agent"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
#: Requests in flight to the apiserver at most (its default max-requests-inflight is
#: 400 reads and 200 mutations, shared with every other client).
MAX_CONNECTIONS = 64
REQUEST_TIMEOUT = 30.0
#: Attempts of a request the apiserver answered 429 (Too Many Requests: overloaded, or a
#: CRD's storage still initializing), as client-go does.
THROTTLED_ATTEMPTS = 10


class KubeError(FederationError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        #: The apiserver's Retry-After, seconds (0: none given).
        self.retry_after = retry_after


def _throttled(err: BaseException) -> bool:
    return isinstance(err, KubeError) and err.status == 429


_BACKOFF = Backoff(initial=0.2, maximum=5.0, jitter=0.2).wait()


def _throttle_wait(state: tenacity.RetryCallState) -> float:
    """The apiserver's Retry-After if it gave one, else exponential backoff with jitter."""
    err = state.outcome.exception() if state.outcome else None
    if isinstance(err, KubeError) and err.retry_after > 0:
        return min(err.retry_after, 10.0)
    return _BACKOFF(state)


def load_configuration(kubeconfig: str | None) -> Configuration:
    """From ``kubeconfig``, else $KUBECONFIG/~/.kube/config, else in-cluster."""
    configuration = Configuration()
    try:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    except kube_config.ConfigException:
        if kubeconfig:
            raise
        kube_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    return configuration


def bearer_token(conf: Configuration) -> str | None:
    """The bearer token of ``conf``, without its scheme, refreshed first.

    A kubeconfig token is stored as ``Bearer <t>`` under ``authorization``, an
    in-cluster one as ``bearer <t>`` under ``BearerToken``, and the in-cluster
    loader re-reads the rotating token file when asked for it.
    """
    for key in ("authorization", "BearerToken"):
        value = conf.get_api_key_with_prefix(key)
        if value:
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token else str(value)
    return None


def _ssl_context(conf: Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=conf.ssl_ca_cert)
    if not conf.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if conf.cert_file:
        context.load_cert_chain(conf.cert_file, conf.key_file)
    return context


class Kube:
    """Async JSON requests against one apiserver. Close it with :meth:`close`."""

    def __init__(self, configuration: Configuration) -> None:
        self.configuration: Any = configuration  # the kubernetes package's stubs are loose
        self._host = configuration.host.rstrip("/")
        self._ssl = _ssl_context(configuration) if self._host.startswith("https") else None
        self._session: aiohttp.ClientSession | None = None
        #: Requests the apiserver answered 429 and that were retried.
        self.throttled = 0

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        # auth_settings() re-reads a refreshed token (in-cluster tokens rotate).
        for auth in self.configuration.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"])] = str(auth["value"])
        return headers

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ssl=self._ssl or False),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                json_serialize=json.dumps,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        api_path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any] | None:
        """Returns the decoded body; None for a GET or DELETE of something absent.

        A 429 is retried (bounded, honouring Retry-After); every other error is the
        caller's to handle.
        """
        url = self._host + api_path + (f"?{urlencode(query)}" if query else "")
        if body is not None and content_type is None:
            content_type = "application/json"
        data = None if body is None else json.dumps(body).encode()
        result: dict[str, Any] | None = await retry_call(
            "apiserver-throttled",
            lambda: self._request_once(method, url, data, content_type),
            retry_if=self._throttled,
            backoff=_throttle_wait,
            attempts=THROTTLED_ATTEMPTS,
            logger=log,
            level=lambda _: logging.INFO,
        )
        return result

    def _throttled(self, err: BaseException) -> bool:
        """A 429, counted (``federation_agent_kube_throttled_retries_total``)."""
        if _throttled(err):
            self.throttled += 1
            return True
        return False

    async def _request_once(
        self, method: str, url: str, data: bytes | None, content_type: str | None
    ) -> dict[str, Any] | None:
        try:
            async with self._client().request(
                method, url, data=data, headers=self._headers(content_type)
            ) as resp:
                status, payload = resp.status, await resp.read()
                retry_after = resp.headers.get("Retry-After", "")
        except (TimeoutError, aiohttp.ClientError, OSError) as err:  # no answer at all
            raise KubeError(f"{method} {url}: {type(err).__name__}: {err}") from err
        if status == 404 and method in ("GET", "DELETE"):
            return None
        if status >= 300:
            message = payload.decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(message).get("message", message)
            raise KubeError(
                f"{method} {url}: {status}: {message}",
                status,
                float(retry_after) if retry_after.isdigit() else 0.0,
            )
        result: dict[str, Any] = json.loads(payload) if payload else {}
        return result

    async def get(self, api_path: str) -> dict[str, Any] | None:
        return await self.request("GET", api_path)

    async def list_items(
        self, api_path: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return (await self.list_versioned(api_path, label_selector))[0]

    async def list_versioned(
        self, api_path: str, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """The items and the list's resourceVersion."""
        query = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", api_path, query=query) or {}
        items: list[dict[str, Any]] = result.get("items") or []
        return items, str((result.get("metadata") or {}).get("resourceVersion") or "0")

    async def apply(self, api_path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` as the agent's field manager (forcing conflicts)."""
        result = await self.request(
            "PATCH",
            api_path,
            obj,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type=APPLY,
        )
        assert result is not None
        return result

    async def patch_status(self, api_path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        result = await self.request(
            "PATCH", api_path + "/status", {"status": status}, content_type=MERGE
        )
        assert result is not None
        return result

    async def delete(self, api_path: str) -> None:
        await self.request("DELETE", api_path)
