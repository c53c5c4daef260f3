"""Request body cap as ASGI middleware, counted on the bytes actually received.

A Content-Length header can lie or be absent (chunked uploads), so the cap is enforced on the
running total of `http.request` chunks the application pulls. Once the cap is crossed the
application's own answer is dropped and the client gets 413. The rest of the body is read and
discarded (up to `drain_bytes` more) before answering: a server that answers and closes while
the client is still sending makes the client's socket reset, and the client would see a broken
connection instead of the 413."""

from __future__ import annotations

import json
from typing import Awaitable, Callable

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised from receive() inside the application when the cap is crossed."""


def json_error_message(status: int, reason: str, message: str, field: str | None = None) -> tuple[Message, Message]:
    body = json.dumps({"error": message, "reason": reason, **({"field": field} if field else {})}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    return start, {"type": "http.response.body", "body": body}


class BodySizeLimit:
    """Wrap an ASGI app so that no request body over `max_bytes` reaches it whole.

    `on_reject(reason)` is called once per refused request (for metrics)."""

    def __init__(self, app, max_bytes: int, drain_bytes: int | None = None,
                 on_reject: Callable[[str], None] | None = None):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.drain_bytes = int(drain_bytes if drain_bytes is not None else max(self.max_bytes, 1 << 20))
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            # Refused before the application runs; the body is drained only when small enough.
            if declared <= self.max_bytes + self.drain_bytes:
                await self._drain(receive, 0)
            await self._reject(send, declared)
            return

        state = {"received": 0, "over": False, "more": True, "started": False}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["more"] = message.get("more_body", False)
                if state["received"] > self.max_bytes:
                    state["over"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # the application's answer to a truncated body is never sent
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            if state["more"]:
                await self._drain(receive, state["received"] - self.max_bytes)
            await self._reject(send, None)

    async def _drain(self, receive: Receive, already: int) -> None:
        """Read and drop the rest of the body, at most drain_bytes in all."""
        extra = already
        while extra <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            extra += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _reject(self, send: Send, declared: int | None) -> None:
        if self.on_reject is not None:
            self.on_reject("too_large")
        what = f"{declared:,} bytes declared" if declared is not None else "more bytes received"
        start, body = json_error_message(
            413, "too_large", f"request body too large ({what}; the limit is {self.max_bytes:,} bytes)")
        await send(start)
        await send(body)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None




LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def default_allowed_hosts(host: str) -> tuple[str, ...]:
    """The Host names a server bound to `host` answers: the loopback names for a loopback or
    wildcard bind (plus this machine's name for a wildcard), else the bound address itself."""
    import socket

    host = host.strip("[]").lower()
    if host in ("0.0.0.0", "::"):
        return (*LOOPBACK_NAMES, socket.gethostname().lower())
    if host in LOOPBACK_NAMES or host.startswith("127."):
        return tuple(dict.fromkeys((*LOOPBACK_NAMES, host)))
    return (host,)


def host_name(header: str) -> str:
    """The name part of a Host header, without the port; an IPv6 literal without brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Refuse requests whose Host header names another server (400, reason "host").

    A web page on any site can point its own DNS name at 127.0.0.1 (DNS rebinding) and its
    script would then read this service as same-origin; checking Host closes that, since the
    browser still sends the page's own name. "*" in `allowed` turns the check off."""

    def __init__(self, app, allowed, on_reject: Callable[[str], None] | None = None):
        self.app = app
        self.allowed = {host_name(a) for a in allowed}
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if host_name(given) in self.allowed:
            await self.app(scope, receive, send)
            return
        if self.on_reject:
            self.on_reject("host")
        start, body = json_error_message(400, "host", f"Host {given!r} is not served here; start the service "
                                                      "with --allowed-hosts NAME to allow it", field="host")
        await send(start)
        await send(body)


__all__ = ["BodySizeLimit", "BodyTooLarge", "HostCheck", "LOOPBACK_NAMES", "default_allowed_hosts", "host_name",
           "json_error_message"]
