"""ASGI middleware: cancel a request's handler when its client goes away.

Falcon (like most ASGI frameworks) keeps running a handler after the client
disconnects; ours waits on a decoder render, so without this a viewer that
scrolled on would still cost a full decode. Cancelling the handler cancels
the gRPC call, and the decoder stops the render.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class CancelOnDisconnect:
    """Wraps `app`; for bodiless requests (GET, HEAD, OPTIONS) only."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            await self._app(scope, receive, send)
            return
        first = await receive()
        if first["type"] == "http.disconnect":
            return
        disconnected = asyncio.Event()
        delivered = False

        async def app_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return first
            await disconnected.wait()
            return {"type": "http.disconnect"}

        app_task = asyncio.ensure_future(self._app(scope, app_receive, send))

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    app_task.cancel()
                    return

        watcher = asyncio.create_task(watch())
        try:
            await app_task
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise  # cancelled from outside (shutdown), not by the client
        finally:
            watcher.cancel()
