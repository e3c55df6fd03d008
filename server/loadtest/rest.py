"""The two REST faces a run reads: Asterisk's ARI (channels, a trunk's calls) and Hilo's API (the wallboard's
queues and agents). Plain requests with the credentials of the settings; no Stasis app is registered."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import aiohttp


class RestError(RuntimeError):
    pass


class Rest:
    def __init__(self, base: str, headers: dict[str, str], auth: aiohttp.BasicAuth | None = None) -> None:
        self.base = base.rstrip("/")
        self._session = aiohttp.ClientSession(headers=headers, auth=auth, timeout=aiohttp.ClientTimeout(total=10))

    async def close(self) -> None:
        await self._session.close()

    async def call(self, method: str, path: str, *, body: Any = None, **params: Any) -> Any:
        """`body`: sent as JSON."""
        clean = {k: str(v) for k, v in params.items() if v is not None}
        try:
            async with self._session.request(method, self.base + path, params=clean, json=body) as resp:
                text = await resp.text()
                if resp.status == 404 and method == "DELETE":
                    return None
                if resp.status >= 400:
                    raise RestError(f"{method} {self.base}{path} -> {resp.status}: {text[:200]}")
                return await resp.json(content_type=None) if text else None
        except aiohttp.ClientError as exc:
            raise RestError(f"{method} {self.base}{path}: {exc}") from exc
        except TimeoutError as exc:  # the session's total timeout: the server did not answer in time
            raise RestError(f"{method} {self.base}{path}: no answer within {self._session.timeout.total:g} s") from exc


class Ari(Rest):
    def __init__(self, url: str, user: str, password: str) -> None:
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        super().__init__(url, {"Authorization": f"Basic {credentials}"})

    async def channels(self) -> list[dict[str, Any]]:
        return list(await self.call("GET", "/channels") or [])

    async def endpoint_channels(self, technology: str, resource: str) -> list[str]:
        found = await self.call("GET", f"/endpoints/{technology}/{quote(resource)}")
        return list((found or {}).get("channel_ids", []))

    async def variable(self, channel_id: str, name: str) -> str | None:
        """A channel variable or function (e.g. CHANNEL(pjsip,call-id)); None if the channel is gone."""
        try:
            found = await self.call("GET", f"/channels/{quote(channel_id)}/variable", variable=name)
        except RestError:
            return None
        return (found or {}).get("value")

    async def hangup(self, channel_id: str) -> None:
        await self.call("DELETE", f"/channels/{quote(channel_id)}")

    async def get_global(self, name: str) -> str | None:
        try:
            found = await self.call("GET", "/asterisk/variable", variable=name)
        except RestError:
            return None
        return (found or {}).get("value")

    async def set_global(self, name: str, value: str) -> None:
        await self.call("POST", "/asterisk/variable", variable=name, value=value)

    async def applications(self) -> list[str]:
        return [a["name"] for a in await self.call("GET", "/applications") or []]

    async def info(self) -> dict[str, Any]:
        return dict(await self.call("GET", "/asterisk/info") or {})


class HiloApi(Rest):
    def __init__(self, base: str, token: str) -> None:
        super().__init__(base, {"Authorization": f"Bearer {token}"})

    async def wallboard(self) -> dict[str, Any]:
        return dict(await self.call("GET", "/api/reports/wallboard") or {})
