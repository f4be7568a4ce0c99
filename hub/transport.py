"""An httpx transport backed by aiohttp's connection pool.

httpx stays the client API, but its own pool was measured here at about twice the CPU per
proxied request of aiohttp's, worsening with concurrency; the proxy path is all I/O, so the
pool is what decides throughput.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from multidict import CIMultiDict

# Set by aiohttp itself from the request, or meaningless across the hop.
_KEEP = frozenset(
    {b"content-type", b"content-encoding", b"content-length", b"retry-after", b"x-request-id"}
)
_DROP = frozenset({b"host", b"content-length", b"connection", b"transfer-encoding", b"keep-alive"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int = 1000, keepalive_seconds: float = 30.0) -> None:
        self.max_connections = max_connections
        self.keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                keepalive_timeout=self.keepalive_seconds,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        headers = CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.lower() not in _DROP
        )
        stream = request.stream
        # The hub builds requests from bytes: join them without an async generator.
        body = (
            b"".join(stream) if isinstance(stream, httpx.SyncByteStream) else await request.aread()
        )
        try:
            upstream = await self._client().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout("upstream timed out", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        return httpx.Response(
            status_code=upstream.status,
            # Only the headers a proxy reads: httpx normalizes each one it is handed, and a
            # provider's dozen rate-limit and tracing headers would cost that on every call.
            headers=[(k, v) for k, v in upstream.raw_headers if k.lower() in _KEEP],
            stream=_UpstreamStream(upstream, request),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _UpstreamStream(httpx.AsyncByteStream):
    def __init__(self, upstream: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self.upstream = upstream
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self.upstream.content.iter_any():
                yield data
        except TimeoutError as exc:
            raise httpx.ReadTimeout("upstream stalled", request=self.request) from exc
        except aiohttp.ClientPayloadError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=self.request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc), request=self.request) from exc

    async def aclose(self) -> None:
        if self.upstream.content.at_eof():
            self.upstream.release()
        else:
            # Closing the socket is what tells the provider to stop generating.
            self.upstream.close()
