"""Secrets the agent reads one GET at a time, each parsed once per ``resourceVersion``.

The agent may not list or watch Secrets (its RBAC grants ``get`` only), so whoever needs
some (:mod:`agents.certificates`, :mod:`agents.credentials`) names them at every sync and
:class:`SecretReads` reads them again: at most :data:`PARALLEL_READS` at once, parsing a
Secret only when its ``resourceVersion`` changed. A 403 is an answer (the agent may not
read it); any other failure keeps the last reading of that Secret, or raises when there
is none yet (the sync is retried).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

from agents import kinds as k
from agents.kinds import KubeObject, resource_version
from agents.kube import Kube, KubeError

log = logging.getLogger(__name__)

ObjectName = tuple[str, str]
T = TypeVar("T")
#: Secrets read at once.
PARALLEL_READS = 8


class SecretReads(Generic[T]):
    """What ``parse`` made of each Secret last read (None: not found), or ``forbidden``'s
    answer for a Secret the agent may not get."""

    def __init__(
        self,
        kube: Kube,
        parse: Callable[[str, str, KubeObject | None], T],
        forbidden: Callable[[str, str], T],
    ) -> None:
        self.kube = kube
        self.parse = parse
        self.forbidden = forbidden
        #: (namespace, name) -> (the Secret's resourceVersion, what was made of it).
        self._read: dict[ObjectName, tuple[str, T]] = {}

    async def refresh(self, wanted: Iterable[ObjectName]) -> Mapping[ObjectName, T]:
        """Read exactly ``wanted`` (forgetting every other Secret); what each became."""
        keys = sorted(set(wanted))
        limit = asyncio.Semaphore(PARALLEL_READS)

        async def one(key: ObjectName) -> tuple[str, T]:
            async with limit:
                return await self._one(*key)

        results = await asyncio.gather(*(one(key) for key in keys))
        self._read = dict(zip(keys, results, strict=True))
        return self.readings

    @property
    def readings(self) -> Mapping[ObjectName, T]:
        return {key: value for key, (_, value) in self._read.items()}

    def get(self, namespace: str, name: str) -> T | None:
        found = self._read.get((namespace, name))
        return None if found is None else found[1]

    async def _one(self, namespace: str, name: str) -> tuple[str, T]:
        before = self._read.get((namespace, name))
        try:
            secret = await self.kube.get(k.SECRETS.path(namespace, name))
        except KubeError as err:
            if err.status == 403:
                return "", self.forbidden(namespace, name)
            if before is not None:
                log.warning("keeping the last reading of Secret %s/%s: %s", namespace, name, err)
                return before
            raise
        version = "" if secret is None else resource_version(secret)
        if before is not None and version and before[0] == version:
            return before
        return version, self.parse(namespace, name, secret)
