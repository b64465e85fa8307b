"""HTTP guards around the BentoML app: body limit, JSON-only APIs, unknown paths, overload replies, 4xx logging.

BentoML 1.4 reads a request body whole before validating it, labels its Prometheus
metrics with the raw request path (so every distinct unknown path adds time series to
the worker, for ever), answers a shed request with "An unexpected error has occurred"
and logs every 400 at ERROR with a traceback. These pieces fix that without touching
BentoML:

- `RequestLimits` (added with `service.add_asgi_middleware`, so it sits inside BentoML's
  metrics and access log and its 413/415 answers are counted there): a body over the
  limit gets 413 before it is read whole — from Content-Length, or counted while a
  chunked body streams in; an API body that is not JSON gets 415.
- `EdgeGuard` (wraps the whole app, outside BentoML's metrics): unknown paths get a
  404 before BentoML's metrics see them; 503/429 replies say "overloaded, retry" and
  carry Retry-After; /docs.json serves the corrected OpenAPI spec.
- `quiet_client_errors`: a logging filter that turns BentoML's ERROR-with-traceback for
  a rejected request into one INFO line (WARNING for a shed request).
- `refuse_new_connections_on_sigterm`: after SIGTERM the listening socket stops
  accepting, so a new request is refused at once instead of waiting in the backlog
  while in-flight requests drain.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("serving.guards")

# Media types accepted by the JSON APIs. BentoML would parse multipart and url-encoded
# bodies as forms (a multipart body without a boundary raised a 500); we only document JSON.
JSON_TYPES = ("", "application/json")
RETRY_AFTER_S = 1  # shed requests: the batcher's queue drains within about a batch's time


def media_type(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


def header(headers: Iterable[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name.lower() == wanted:
            return value
    return None


async def send_json(send: Send, status: int, payload: dict, extra_headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    *extra_headers],
    })
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """413 for bodies over `max_body_bytes`, 415 for non-JSON bodies, on the API `paths`."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, paths: Iterable[str]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.paths = frozenset(paths)

    def _too_large(self) -> dict:
        return {"error": f"request body larger than {self.max_body_bytes} bytes (FIC_MAX_BODY_BYTES); send fewer "
                         "texts per request, or score large documents offline with python -m serving.batch"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        kind = media_type(headers)
        if kind not in JSON_TYPES and not kind.endswith("+json"):
            await send_json(send, 415, {"error": f"content-type {kind!r} is not accepted; send the body as JSON "
                                                 "with content-type: application/json"})
            return
        declared = header(headers, b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_body_bytes
            except ValueError:
                await send_json(send, 400, {"error": "Content-Length is not a number"})
                return
            if too_large:
                # Answer without reading: the server closes the connection rather than drain the body.
                await send_json(send, 413, self._too_large(), [(b"connection", b"close")])
                return
        # Read the body here, counting as it streams in (a chunked body has no Content-Length),
        # and stop at the limit; the app then gets the same body in one message.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await send_json(send, 413, self._too_large(), [(b"connection", b"close")])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)


def static_files(app: Any) -> list[str]:
    """Relative paths of the files a Starlette StaticFiles app serves."""
    directory = getattr(app, "directory", None)
    if not directory or not Path(directory).is_dir():
        return []
    root = Path(directory)
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


def known_paths(app: Any, prefix: str = "") -> set[str]:
    """Every concrete path the app's routes answer: plain routes, mounted apps' routes, static files."""
    from starlette.routing import Mount, Route

    paths: set[str] = set()
    for route in getattr(app, "routes", []):
        if isinstance(route, Route) and "{" not in route.path:
            paths.add(prefix + route.path)
        elif isinstance(route, Mount):
            mount_prefix = prefix + route.path.rstrip("/")
            inner = route.app
            if getattr(inner, "routes", None) is not None:
                paths |= known_paths(inner, mount_prefix)
            paths |= {f"{mount_prefix}/{name}" for name in static_files(inner)}
    return paths


class EdgeGuard:
    """Outermost layer: unknown paths, overload replies and the OpenAPI document."""

    def __init__(self, app: ASGIApp, spec: Callable[[], dict], api_paths: Iterable[str]) -> None:
        self.app = app
        self.spec = spec
        self.api_paths = frozenset(api_paths)
        self._known: set[str] | None = None
        self._spec_body: bytes | None = None

    def is_known(self, path: str) -> bool:
        if self._known is None:  # routes are complete once the app is built; read them on first use
            self._known = known_paths(self.app) | set(self.api_paths)
        return path in self._known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not self.is_known(path):
            # Answered here, before BentoML's metrics middleware would add time series labelled
            # with this path; the path is not echoed back, so the reply stays small.
            await send_json(send, 404, {"error": "no such endpoint; see /docs.json for the API"})
            return
        if path == "/docs.json" and scope["method"] in ("GET", "HEAD"):
            if self._spec_body is None:
                self._spec_body = json.dumps(self.spec(), ensure_ascii=False).encode("utf-8")
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(self._spec_body)).encode())]})
            await send({"type": "http.response.body", "body": self._spec_body if scope["method"] == "GET" else b""})
            return
        if path not in self.api_paths:
            await self.app(scope, receive, send)
            return

        held: Message | None = None

        async def overload_aware_send(message: Message) -> None:
            # BentoML's shed reply (503) says "An unexpected error has occurred"; its concurrency
            # limit (429) says "Too many requests" without a hint when to come back.
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] in (429, 503):
                held = message
                return
            if held is not None and message["type"] == "http.response.body":
                status = held["status"]
                held = None
                error = ("overloaded: the model's queue is longer than FIC_MAX_LATENCY_MS allows"
                         if status == 503 else "too many requests in flight")
                await send_json(send, status, {"error": f"{error}; retry after {RETRY_AFTER_S} s"},
                                [(b"retry-after", str(RETRY_AFTER_S).encode())])
                return
            await send(message)

        await self.app(scope, receive, overload_aware_send)


class QuietClientErrors(logging.Filter):
    """One line instead of an ERROR traceback when BentoML logs a request it rejected.

    BentoML calls `logger.error("Exception on %s [%s]", path, method, exc_info=True)` for
    every validation error; a fuzzing run wrote thousands of 30-line tracebacks. Client
    errors become one INFO line (with the validation messages, never the input), shed
    requests one WARNING; real server errors keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from pydantic import ValidationError

        from bentoml.exceptions import BentoMLException

        if isinstance(exc, ValidationError):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)[:3]
            )
            summary, level = f"400 {problems}", logging.INFO
        elif isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
            summary, level = f"{int(exc.error_code)} {str(exc)[:200]}", logging.INFO
        elif isinstance(exc, BentoMLException) and int(exc.error_code) == 503:
            summary, level = "503 shed: overloaded", logging.WARNING
        else:
            return True
        path, method = (record.args or ("?", "?"))[:2] if isinstance(record.args, tuple) else ("?", "?")
        record.msg = "rejected %s %s: %s"
        record.args = (method, path, summary[:300])
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Install `QuietClientErrors` on the logger BentoML's request handler logs to (once)."""
    target = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, QuietClientErrors) for f in target.filters):
        target.addFilter(QuietClientErrors())


def _listening_sockets() -> list[int]:
    fds = []
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        fd = int(name)
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue  # not a socket
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                fds.append(fd)
        except OSError:
            pass
        finally:
            sock.close()
    return fds


def refuse_new_connections_on_sigterm() -> None:
    """On SIGTERM, stop the listening socket before uvicorn's graceful shutdown starts.

    bentoml serve's supervisor owns the listening socket and keeps it open until every
    worker has exited, so after SIGTERM new connections queued in the kernel backlog and
    hung until the drain ended. shutdown() on a listening socket stops it for every
    process sharing it: new connections are refused at once, in-flight requests finish.
    Call from the worker's main thread once the server runs (uvicorn's handler is then installed).
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        log.warning("not on the main thread: cannot watch SIGTERM; new connections will wait during shutdown")
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        for fd in _listening_sockets():
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            finally:
                sock.close()
        log.info("SIGTERM: no longer accepting connections; finishing requests in flight")
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # nobody else handles it: terminate as before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
