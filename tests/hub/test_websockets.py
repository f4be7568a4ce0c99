"""Websocket scopes: the hub serves none and refuses them before accepting; the auth
middleware, used alone in front of an app that does serve them, asks them for a key."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets
from starlette.types import Message, Receive, Scope, Send
from websockets.exceptions import InvalidStatus

from hub.app import create_app
from middleware.auth import AuthMiddleware, hash_key, session_signer
from middleware.call import get_identity
from middleware.ports import AccountRecord, KeyRecord
from tests.conftest import USER, Hub, LiveServer, make_settings

pytestmark = pytest.mark.anyio
GOOD_KEY = "ahk_" + "g" * 40


class Keys:
    """One valid key, and the account behind it."""

    async def find_key(self, key_hash: str) -> KeyRecord | None:
        if key_hash != hash_key(GOOD_KEY):
            return None
        return KeyRecord("k1", 1, USER, None, False, False, None)

    def touch_key(self, key_id: str) -> None:
        pass

    async def find_account(self, user_did: str) -> AccountRecord | None:
        return AccountRecord(1, False) if user_did == USER else None


def ws_scope(headers: list[tuple[bytes, bytes]], *, denial: bool) -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"hub.test"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial else {},
    }


async def sent_by(app: Any, scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("denial", [False, True])
async def test_the_hub_refuses_a_websocket_even_with_a_key(hub: Hub, denial: bool) -> None:
    key = [(b"authorization", f"Bearer {hub.key}".encode())]
    sent = await sent_by(hub.app, ws_scope(key, denial=denial))

    if denial:  # the server sends our answer as the handshake's HTTP response
        start, body = sent
        assert (start["type"], start["status"]) == ("websocket.http.response.start", 403)
        assert json.loads(body["body"])["error"]["code"] == "websocket_refused"
    else:  # closed before accepted: the server answers 403
        assert sent == [{"type": "websocket.close", "code": 1008}]


class Recorder:
    """An app behind the auth middleware: notes the scopes that reach it."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)


def session_cookie() -> bytes:
    signed = session_signer("s3cret").dumps([USER, None, 0])
    return f"aigne_hub_session={signed}".encode()


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"authorization", b"Bearer ahk_unknown")],
        [(b"authorization", b"Basic abc")],
        [(b"cookie", session_cookie())],  # any site's page can open it with the cookie
    ],
)
async def test_auth_refuses_a_websocket_without_a_valid_key(
    headers: list[tuple[bytes, bytes]],
) -> None:
    inner = Recorder()
    auth = AuthMiddleware(inner, keys=Keys(), accounts=Keys(), session_secret="s3cret")
    refused = await sent_by(auth, ws_scope(headers, denial=False))
    denied = await sent_by(auth, ws_scope(headers, denial=True))

    assert inner.scopes == []
    assert refused == [{"type": "websocket.close", "code": 1008}]
    assert denied[0]["status"] == 401 and denied[0]["type"] == "websocket.http.response.start"


async def test_auth_lets_a_websocket_with_a_key_and_the_lifespan_through() -> None:
    inner = Recorder()
    auth = AuthMiddleware(inner, keys=Keys())
    key = [(b"authorization", f"Bearer {GOOD_KEY}".encode())]
    assert await sent_by(auth, ws_scope(key, denial=False)) == []
    await sent_by(auth, {"type": "lifespan", "asgi": {"version": "3.0"}})

    websocket, lifespan = inner.scopes
    identity = get_identity(websocket)
    assert identity is not None and identity.user_did == USER
    assert lifespan["type"] == "lifespan"


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """A websocket app that accepts, and says who it was told the caller is."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    identity = get_identity(scope)
    await send({"type": "websocket.send", "text": identity.user_did if identity else "nobody"})
    await send({"type": "websocket.close", "code": 1000})


@pytest.mark.slow
def test_a_real_server_refuses_the_hubs_websockets(tmp_path: Any) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'hub.db'}")
    with LiveServer(create_app(settings)) as hub:
        url = hub.url.replace("http://", "ws://") + "/v1/chat/completions"
        with pytest.raises(InvalidStatus) as refused:
            _connect(url, {"authorization": f"Bearer {GOOD_KEY}"})
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body or b"")["error"]["code"] == "websocket_refused"


@pytest.mark.slow
def test_a_real_server_runs_auth_on_websockets() -> None:
    with LiveServer(AuthMiddleware(echo, keys=Keys())) as server:
        url = server.url.replace("http://", "ws://") + "/stream"
        with pytest.raises(InvalidStatus) as refused:
            _connect(url, {})
        greeting = _connect(url, {"authorization": f"Bearer {GOOD_KEY}"})
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"")["error"]["code"] == "missing_api_key"
    assert greeting == USER


def _connect(url: str, headers: dict[str, str]) -> str:
    from websockets.sync.client import connect

    with connect(url, additional_headers=headers, open_timeout=10) as socket:
        return str(socket.recv(timeout=10))


assert websockets  # the real-server tests need it installed (a test dependency)
