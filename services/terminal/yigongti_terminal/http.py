"""HTTP calls to a service with the terminal's bearer token, and its feed.

A refusal raises HttpRefused with the status and the service's `detail`
(a code or phrase, never a value sent); messages.http_refusal words it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from opentelemetry import propagate

from .sender import LinkDown


class HttpRefused(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail


class ServiceHttp:
    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, transport=transport,
            headers={"Authorization": f"Bearer {token}"})

    async def __aenter__(self) -> ServiceHttp:
        return self

    async def __aexit__(self, *exc) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict | None = None, content: bytes | None = None,
                      headers: dict | None = None, timeout: float | None = None) -> Any:
        headers = dict(headers or {})
        propagate.inject(headers)  # the call joins the current trace (W3C traceparent)
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if json is not None:
            kwargs["json"] = json
        if content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise LinkDown(type(exc).__name__) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                # The kit answers {"detail": ...}; settlement's identity check answers
                # {"status": "refused", "reason": ...}.
                detail = body.get("detail") or body.get("reason")
            except (ValueError, AttributeError):
                detail = None
            raise HttpRefused(response.status_code, detail)
        if "json" in response.headers.get("content-type", ""):
            return response.json()
        return response.content

    async def get(self, path: str, **kwargs) -> Any:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs) -> Any:
        return await self.request("POST", path, **kwargs)

    async def clock_offset_s(self) -> float | None:
        """The service's clock minus ours, from its Date header (whole seconds):
        a terminal clock off by more than the freshness window (300 s) gets
        every record ignored, unanswered, so the terminal checks it."""
        from email.utils import parsedate_to_datetime

        try:
            response = await self._client.get("/healthz")
        except httpx.TransportError as exc:
            raise LinkDown(type(exc).__name__) from exc
        date = response.headers.get("date")
        if not date:
            return None
        return (parsedate_to_datetime(date) - datetime.now(UTC)).total_seconds()

    async def feed(self, after: int = 0, *, limit: int = 500, wait: float = 0) -> dict:
        """One page of the institution's feed after the cursor `after`."""
        return await self.get("/feed", params={"after": after, "limit": limit, "wait": wait},
                              timeout=wait + 10)
