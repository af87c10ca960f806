"""The agent's Kubernetes client: raw JSON over the kubernetes library's transport.

Used by the export publisher, the import reconciler and the status writer.
It reuses the ``kubernetes`` package for kubeconfig/in-cluster configuration
and TLS, but sends and returns raw JSON (no generated models): the agent's
pure functions work on Kubernetes JSON, and skipping model validation keeps
thousands of objects cheap. Calls run in worker threads so the event loop
(kopf, the registry watcher) never blocks. Errors become :class:`KubeError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration

from federation.errors import FederationError

FIELD_MANAGER = "federation-agent"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


class KubeError(FederationError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def load_api_client(kubeconfig: str | None) -> ApiClient:
    """An ApiClient from ``kubeconfig``, else $KUBECONFIG/~/.kube/config, else in-cluster."""
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
    configuration.connection_pool_maxsize = 32
    return ApiClient(configuration)


class Kube:
    """Async JSON requests against one apiserver."""

    def __init__(self, api_client: ApiClient) -> None:
        self._client = api_client
        self._host = api_client.configuration.host.rstrip("/")

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        for auth in self._client.configuration.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"])] = str(auth["value"])
        return headers

    def _request_sync(
        self, method: str, url: str, body: Any, content_type: str | None
    ) -> dict[str, Any] | None:
        try:
            resp = self._client.rest_client.request(  # type: ignore[no-untyped-call]
                method,
                url,
                headers=self._headers(content_type),
                body=body,  # JSON-encoded by the transport for json and apply-yaml types
                _request_timeout=30,
            )
            resp.read()
        except Exception as err:  # urllib3 and socket errors: no answer at all
            raise KubeError(f"{method} {url}: {err}") from err
        status = int(resp.status)
        if status == 404 and method in ("GET", "DELETE"):
            return None
        if status >= 300:
            message = resp.data.decode(errors="replace")
            with contextlib.suppress(ValueError):
                message = json.loads(message).get("message", message)
            raise KubeError(f"{method} {url}: {status}: {message}", status)
        result: dict[str, Any] = json.loads(resp.data) if resp.data else {}
        return result

    async def request(
        self,
        method: str,
        api_path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any] | None:
        """Returns the decoded body; None for a GET or DELETE of something absent."""
        url = self._host + api_path + (f"?{urlencode(query)}" if query else "")
        if body is not None and content_type is None:
            content_type = "application/json"
        return await asyncio.to_thread(self._request_sync, method, url, body, content_type)

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
