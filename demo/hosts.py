"""Which requests the demo answers: only those addressed to the names it serves under.

A web page can point its own domain at 127.0.0.1 (DNS rebinding) and then talk to the demo as
"same origin": the browser sends that domain in `Host`. Refusing every `Host` (and `Origin`)
that is not one of the demo's own names closes that door; a reverse proxy's public name is
added with `crossmodal demo --allowed-host NAME`.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from crossmodal.cli.demo import is_loopback

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The host names requests may carry for a server listening on `host`, or None to accept
    any (a wildcard address with no name given: the machine's names are not known here)."""
    names = {name.strip().lower().strip("[]") for name in extra if name.strip()}
    if host in WILDCARD_ADDRESSES:
        return frozenset(names | set(LOOPBACK_NAMES)) if names else None
    if is_loopback(host.strip("[]")):
        names |= set(LOOPBACK_NAMES)
    return frozenset(names | {host.lower().strip("[]")})


def hostname(value: str) -> str:
    """`127.0.0.1:7860` -> `127.0.0.1`, `[::1]:7860` -> `::1`, `http://a.b:1` -> `a.b`."""
    if "://" in value:
        return (urlsplit(value).hostname or "").lower()
    return (urlsplit("//" + value).hostname or "").lower()


class HostGuard:
    """ASGI middleware: 403 for a request whose Host, or Origin when it has one, is not allowed."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            host = hostname(headers.get("host", ""))
            origin = headers.get("origin")
            origin_ok = origin is None or origin == "null" or hostname(origin) in self.allowed
            if host not in self.allowed or not origin_ok:
                await _refuse(scope, send)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send) -> None:
    body = b"crossmodal demo: this address is not one the demo serves under (see --allowed-host)\n"
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
