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
- `ReadDeadlineProtocol`: uvicorn closes an idle keep-alive connection, but never one
  that is still sending its request: 260 connections each sending headers and one body
  byte held BentoML's concurrency limit (256) for its 120 s timeout, and a connection
  that sent nothing, or half its headers, stayed open for good. Each request must now
  arrive whole, headers and body, within a deadline (408 and the connection closed).
  `EdgeGuard` also reads API bodies before BentoML's concurrency limit sees the request,
  so a slow upload holds no slot while it arrives.
- `guarded_service_class`: the one place that reaches past BentoML's public API. Given to
  `@bentoml.service(service_class=...)`, it wraps the app BentoML builds in `EdgeGuard` and
  installs `ReadDeadlineProtocol` when the worker builds it, and bounds how long the adaptive
  batcher holds a lone request (`bound_cork`) and gives each reply its media type once
  (`fix_media_types`); tests/serving/test_reliability.py
  (unknown paths leave /metrics unchanged; stalled uploads are closed) catch a BentoML change.
- `ModelQueue`: admission for /classify. BentoML's batcher sheds a request part-way (a
  256-text request was split into four batches, the first ran, the rest were shed with a
  503 and the work done was wasted); a request is now admitted or refused before any of
  its work starts, from the estimated model time of the work admitted ahead of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, MutableMapping, Sequence

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

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


def is_json(kind: str) -> bool:
    return kind in JSON_TYPES or kind.endswith("+json")


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
    """413 for bodies over `max_body_bytes`, 415 for non-JSON bodies, on the API `paths`;
    503 before any work starts for a request on `queued_paths` that `queue` does not admit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, paths: Iterable[str],
                 queue: "ModelQueue | None" = None, queued_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.paths = frozenset(paths)
        self.queue = queue
        self.queued_paths = frozenset(queued_paths)

    def _too_large(self) -> dict:
        return {"error": f"request body larger than {self.max_body_bytes} bytes (FIC_MAX_BODY_BYTES); send fewer "
                         "texts per request, or score large documents offline with python -m serving.batch"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        kind = media_type(headers)
        if not is_json(kind):
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

        units = self.queue.units_of(body) if self.queue is not None and scope["path"] in self.queued_paths else None
        if units is None:  # not queued here, or not a list of texts (validation answers it)
            await self.app(scope, replay, send)
            return
        if not self.queue.admit(units):
            # Refused before the batcher sees it: no part of it runs (EdgeGuard words the reply).
            await send_json(send, 503, {"error": "overloaded"}, [(b"retry-after", str(RETRY_AFTER_S).encode())])
            return
        try:
            await self.app(scope, replay, send)
        finally:
            self.queue.finish(units)


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

    def __init__(self, app: ASGIApp, spec: Callable[[], dict], api_paths: Iterable[str],
                 max_body_bytes: int | None = None) -> None:
        self.app = app
        self.spec = spec
        self.api_paths = frozenset(api_paths)
        self.max_body_bytes = max_body_bytes  # None: pass bodies through unread
        self._known: set[str] | None = None
        self._spec_body: bytes | None = None

    async def _body_first(self, scope: Scope, receive: Receive) -> Receive | None:
        """Read an API request's body here, outside BentoML's concurrency limit; None if the client left.

        BentoML counts a request against `max_concurrency` from its headers on, so uploads
        that stall after the headers took every slot (260 sockets, 26 KB in all, locked out
        /classify and /metadata). Read here, a slow upload holds no slot; the read deadline
        (ReadDeadlineProtocol) closes it if it never completes. Bodies RequestLimits refuses
        unread (declared over the limit, not JSON) pass through unread, and reading stops at
        the limit, where RequestLimits counts the rest and answers 413.
        """
        headers = scope.get("headers", [])
        declared = header(headers, b"content-length")
        if not is_json(media_type(headers)) or (
                declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_body_bytes)):
            return receive
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            messages.append(message)
            size += len(message.get("body", b""))
            if not message.get("more_body", False) or size > self.max_body_bytes:
                break
        if not messages[-1].get("more_body", False):  # whole: hand it on as one message
            messages = [{"type": "http.request", "body": b"".join(m.get("body", b"") for m in messages),
                         "more_body": False}]

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()  # the rest of an oversized body, or the disconnect

        return replay

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
        if self.max_body_bytes is not None and scope["method"] == "POST":
            receive = await self._body_first(scope, receive)
            if receive is None:
                return  # the client left before its body arrived: nothing to answer

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


class ModelQueue:
    """Admission to the model for /classify, in estimated seconds of model time.

    BentoML's batcher sheds a queued request whose wait passes its max_latency_ms even when
    part of it has run: 256 texts of 2,000 characters are four batches of 64, and on the e5
    default (2 cores) the first batches ran and the rest were shed with a 503 after ~10.5 s,
    so an idle service refused the largest request its schema accepts, and every retry paid
    for the same work again. Here a request is admitted while the estimated model time of the
    work admitted ahead of it is within `budget_s` and refused (503, retry) otherwise, before
    any of it runs; on an idle worker nothing is ahead, so every request the schema accepts is
    admitted. The service gives the batcher a limit it never reaches, so admitted work is not shed.

    The estimate: a text costs min(characters, unit_cap) + PER_TEXT units (unit_cap = the model's
    max_length, since a character is at least about one token for Chinese and the model reads
    at most max_length tokens), and the seconds per unit are measured on every model call (an
    exponential average, so the estimate follows the machine and its load).
    """

    PER_TEXT = 8  # special tokens, the TF-IDF half, pre- and post-processing of one text

    def __init__(self, budget_s: float, unit_cap: int = 512) -> None:
        self.budget_s = budget_s
        self.unit_cap = unit_cap
        self.seconds_per_unit: float | None = None  # unknown until the first model call is timed
        # The first call's rate (the service times one at startup, on an idle worker): what the model needs
        # when it has the cores to itself, for limits that must not move with the load.
        self.idle_seconds_per_unit: float | None = None
        self.pending = 0  # units admitted and not finished

    def units(self, lengths: Iterable[int]) -> int:
        return sum(min(n, self.unit_cap) + self.PER_TEXT for n in lengths)

    def units_of(self, body: bytes) -> int | None:
        """The units of a /classify body; None when it is not {"texts": [strings]} (validation answers that)."""
        try:
            texts = json.loads(body).get("texts")
        except (ValueError, AttributeError, RecursionError):
            return None
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            return None
        return self.units(len(text) for text in texts)

    def wait_s(self) -> float:
        """Estimated model time of the work admitted and not finished."""
        return self.pending * (self.seconds_per_unit or 0.0)

    def admit(self, units: int) -> bool:
        if self.pending and self.wait_s() > self.budget_s:
            return False
        self.pending += units
        return True

    def finish(self, units: int) -> None:
        self.pending = max(0, self.pending - units)

    def chunks(self, lengths: Sequence[int], seconds: float) -> list[tuple[int, int]]:
        """(start, end) ranges of consecutive texts, each estimated at about `seconds` of model time (at least
        one text each): a page is scored in such chunks so that a /classify request waits at most one."""
        per_unit = self.seconds_per_unit or 0.0
        ranges, start, cost = [], 0, 0.0
        for end, length in enumerate(lengths):
            text_cost = self.units([length]) * per_unit
            if end > start and cost + text_cost > seconds:
                ranges.append((start, end))
                start, cost = end, 0.0
            cost += text_cost
        if start < len(lengths):
            ranges.append((start, len(lengths)))
        return ranges

    def observe(self, texts: Sequence[str], seconds: float) -> None:
        """Record one model call's duration."""
        rate = seconds / max(self.units(len(text) for text in texts), 1)
        if self.idle_seconds_per_unit is None:
            self.idle_seconds_per_unit = rate
        self.seconds_per_unit = rate if self.seconds_per_unit is None else 0.7 * self.seconds_per_unit + 0.3 * rate


class ReadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each request, headers and body.

    uvicorn times a connection only between requests (timeout_keep_alive, 5 s in BentoML):
    one that sends nothing, sends its headers a byte at a time, or sends headers and part of
    a body and then idles, stays open until the client leaves. Here a clock starts when the
    server begins waiting for a request (on connecting, and after each response) and stops
    once the request has arrived whole; at `read_timeout_s` the connection is closed, with a
    408 if part of a request had arrived. A clock per request, not per read, so trickling a
    byte now and then does not keep a connection.
    """

    read_timeout_s: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._watch_read()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_read()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_read()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def _reading(self) -> bool:
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing()

    def _watch_read(self) -> None:
        if not self._reading():
            self._stop_read_timer()
        elif self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self._reading():
            return
        partly_sent = self.conn.their_state is h11.SEND_BODY or bool(self.conn.trailing_data[0])
        if partly_sent and not (self.cycle is not None and self.cycle.response_started):
            body = json.dumps({"error": f"the request did not arrive whole within {self.read_timeout_s:g} s; "
                                        "send headers and body without pausing"}).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        # The app (if the headers had arrived) sees http.disconnect and stops waiting for the body.
        self.transport.close()


def use_read_deadline(seconds: float) -> None:
    """Serve HTTP/1.1 in this process with ReadDeadlineProtocol; call before uvicorn starts.

    BentoML's worker builds uvicorn's Config itself, with http="auto" and no way to pass a
    protocol class, and uvicorn resolves "auto" through its HTTP_PROTOCOLS table when the
    server starts; pointing that entry here swaps the protocol. "auto" is h11 unless httptools
    is installed (BentoML does not install it); with it, this still selects h11.
    """
    import uvicorn.config

    ReadDeadlineProtocol.read_timeout_s = seconds
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:ReadDeadlineProtocol"


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
        from bentoml.exceptions import BentoMLException
        from pydantic import ValidationError

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


def development_mode() -> bool:
    """Whether this worker runs under `bentoml serve --development` (BentoML has no public accessor)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return bool(BentoMLContainer.development_mode.get())


def guarded_service_class(spec: Callable[[Any], dict], api_paths: Sequence[str], max_body_bytes: int,
                          read_timeout_s: float, max_cork_s: float = 0.05) -> type:
    """A `bentoml.Service` subclass whose ASGI app is wrapped in `EdgeGuard`, for
    `@bentoml.service(service_class=...)`; `spec(service)` builds the /docs.json document.

    Middleware added with `add_asgi_middleware` runs inside BentoML's metrics middleware, which has
    already taken the raw path as a label by then; only a wrapper around the whole app (built by
    `to_asgi`, which the worker calls before it starts uvicorn) can turn unknown paths away first.
    """
    import bentoml
    from _bentoml_impl.server.app import ServiceAppFactory

    class GuardedService(bentoml.Service):
        __slots__ = ()

        def to_asgi(self, is_main: bool = True) -> ASGIApp:
            # bentoml.Service.to_asgi, with the batchers' cork bounded between building and serving.
            use_read_deadline(read_timeout_s)
            self.inject_config()
            factory = ServiceAppFactory(self, is_main=is_main)
            bound_cork(factory.dispatchers.values(), max_cork_s)
            fix_media_types(self)
            return EdgeGuard(factory(), spec=lambda: spec(self), api_paths=api_paths, max_body_bytes=max_body_bytes)

    return GuardedService


def bound_cork(dispatchers: Iterable[Any], max_cork_s: float) -> None:
    """Hold a request at most `max_cork_s` for company when the model is idle.

    BentoML's adaptive batcher (CorkDispatcher) corks a request while the model is idle until
    n * (wait of the newest + a tick + per-item time) passes 0.95 x `optimizer.wait`, and
    `optimizer.wait` is the mean queue wait of the last 50 batches — time spent behind a busy
    model included. After a burst that mean is the burst's queueing (about a second on the e5
    default), so a lone sentence on an idle worker was held about that long, and the mean
    decayed only as 50 new batches replaced the old (the operator's "0.9-1.2 s, for ~60
    requests"). Under load batches form anyway while the model is busy; an idle model gains
    nothing from waiting longer than a few tens of milliseconds.
    """
    for dispatcher in dispatchers:
        dispatcher.optimizer = _bounded_optimizer(type(dispatcher.optimizer), max_cork_s)(dispatcher.max_latency)


def fix_media_types(service: Any) -> None:
    """Give each API's response model its media type once.

    BentoML finds a JSON response's media type by generating the response model's whole JSON schema, on
    every response (IOMixin.to_http_response -> mime_type -> model_json_schema): py-spy showed it as most
    of the event loop's validation and JSON time under 32 clients. With `media_type` set, mime_type
    returns it at once; it is the value mime_type computed, so replies are unchanged.
    """
    for method in service.apis.values():
        spec = method.output_spec
        if spec.media_type is None:
            spec.media_type = spec.mime_type()


def _bounded_optimizer(base: type, max_cork_s: float) -> type:
    class BoundedCork(base):  # type: ignore[misc, valid-type]
        def trigger_refresh(self) -> None:
            super().trigger_refresh()
            self.wait = min(self.wait, max_cork_s)

    return BoundedCork


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
