"""An httpx transport backed by aiohttp's connection pool.

httpx stays the client API, but its own pool was measured here at about twice the CPU per
proxied request of aiohttp's, worsening with concurrency; the proxy path is all I/O, so the
pool is what decides throughput.

Pooled connections go stale: a provider closes a connection left idle for its keep-alive
timeout (uvicorn's is 5 s), and a request sent on it just as it closes fails without ever
reaching the provider's application. So the pool stops reusing a connection before that
timeout (`idle_seconds`), and a request that fails on a reused connection before any byte
of the answer arrived is sent once more, on a new connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from weakref import WeakSet

import aiohttp
import httpx
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from multidict import CIMultiDict

# Set by aiohttp itself from the request, or meaningless across the hop.
_KEEP = frozenset(
    {b"content-type", b"content-encoding", b"content-length", b"retry-after", b"x-request-id"}
)
_DROP = frozenset({b"host", b"content-length", b"connection", b"transfer-encoding", b"keep-alive"})


# Whether the connection the current request went out on had served one before. Set by the
# connector in the request's own task, read by the transport when the request fails.
_REUSED: ContextVar[bool] = ContextVar("aigne_hub_upstream_reused", default=False)
# How a connection the provider had already closed fails a request sent on it: closed as it
# was read from (no answer at all), or reset as the request was written. A connector error
# (a subclass of ClientOSError) is a new connection that could not be made: not stale.
_STALE = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectionResetError,
    aiohttp.ClientOSError,
)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's pool, noting for each request whether its connection is a reused one."""

    def __init__(self, *, limit: int, keepalive_timeout: float) -> None:
        super().__init__(limit=limit, keepalive_timeout=keepalive_timeout, ttl_dns_cache=300)
        # Every connection handed out so far (weakly: closed ones drop out by themselves).
        self._served: WeakSet[ResponseHandler] = WeakSet()

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol is not None:
            if protocol in self._served:
                _REUSED.set(True)
            else:
                self._served.add(protocol)
        return connection


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        max_connections: int = 1000,
        idle_seconds: float = 4.0,
        on_stale_retry: Callable[[], None] | None = None,
    ) -> None:
        self.max_connections = max_connections
        # aiohttp checks a pooled connection's idle time as it hands it out, so one idle for
        # longer is never reused however late its cleanup timer runs. The hub starts counting
        # when it has read the whole answer, after the provider started its own count: any
        # value below the provider's keep-alive timeout leaves that gap as a margin.
        self.idle_seconds = idle_seconds
        # Told of each request sent again because its reused connection had gone stale.
        self.on_stale_retry = on_stale_retry or _nothing
        self._session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = _Connector(limit=self.max_connections, keepalive_timeout=self.idle_seconds)
            self._session = _session(connector)
        return self._session

    def _fresh_client(self) -> aiohttp.ClientSession:
        """A session whose every request opens a connection of its own, for the retries:
        the pool may hold more connections that went stale at the same moment."""
        if self._fresh_session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, force_close=True, ttl_dns_cache=300
            )
            self._fresh_session = _session(connector)
        return self._fresh_session

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
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        url = str(request.url)
        client = self._client()
        try:
            for attempt in (1, 2):
                _REUSED.set(False)
                try:
                    upstream = await client.request(
                        request.method,
                        url,
                        headers=headers,
                        data=body or None,
                        allow_redirects=False,
                        timeout=timeout,
                    )
                    break
                except _STALE as exc:
                    # request() returns once the answer's head is read, so a failure here
                    # came before any of it. On a reused connection that is the provider
                    # having closed it while idle: the request never reached its application.
                    # Sent once more on a connection of its own, not the pool's next one,
                    # which may have gone stale at the same moment.
                    stale = _REUSED.get() and not isinstance(exc, aiohttp.ClientConnectorError)
                    if attempt == 2 or not stale:
                        raise
                    self.on_stale_retry()
                    client = self._fresh_client()
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
        for session in (self._session, self._fresh_session):
            if session is not None:
                await session.close()
        self._session = self._fresh_session = None


def _session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


def _nothing() -> None:
    pass


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
