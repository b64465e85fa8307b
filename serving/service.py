"""HTTP service for the future-industry classifier (BentoML 1.4).

    bentoml serve serving.service:FutureIndustryClassifier

Endpoints
    POST /classify        {"texts": [...]}  -> one result per text, in order (adaptive batching)
    POST /classify_page   {"text": "<raw page>", "url": optional} -> units with spans and predictions + summary
    GET  /metadata        model tag, labels, thresholds, preprocessing version, training metrics, limits
    GET  /docs.json       the OpenAPI document; /livez, /readyz, /metrics are BentoML's own

Settings come from the environment, read once at import (a value that cannot be used stops
`bentoml serve` with one line naming the variable):
    FIC_MODEL             model tag in the BentoML store (default future-industry-classifier:latest)
    FIC_MAX_BATCH_SIZE    adaptive batching: most texts per model call (default 64)
    FIC_MAX_LATENCY_MS    queueing budget of /classify: a request is refused with 503 (before any of its work
                          starts) when the estimated model time of the requests admitted ahead of it is longer;
                          an idle worker admits every request the schema accepts (default 10000; see "Work policy")
    FIC_BATCHING          "off" turns adaptive batching off (for benchmarks)
    FIC_MAX_TEXTS         most texts in one /classify request (default 256)
    FIC_MAX_TEXT_CHARS    longest text accepted by /classify (default 2000 characters)
    FIC_MAX_PAGE_CHARS    longest page accepted by /classify_page (default 200000 characters)
    FIC_MAX_PAGE_UNITS    most units a page may split into (default 2000); more gets 413
    FIC_MAX_BODY_BYTES    largest request body (default 8 MiB); more gets 413 before it is read
    FIC_READ_TIMEOUT_S    seconds a connection has to deliver each request whole, headers and body (default 30);
                          a slower one is closed (408 if part of a request arrived)
    FIC_THREADS           torch threads per worker (default: the CPU quota)
    FIC_WORKERS           worker processes, each with its own copy of the model (default 1); for throughput
                          one per core with FIC_THREADS=1, as memory allows (docs/performance.md)
    FIC_PRECISION         fp32, bf16, fp16 (GPU), int8, onnx, onnx-int8 (CPU; onnx needs the onnx extra)
                          or auto (default): the precision recorded with the model by serving.package

Length policy: a text longer than FIC_MAX_TEXT_CHARS is rejected (400) — send whole
pages to /classify_page, which splits them. A text within the limit but longer than
the model's max_length tokens is scored on its first max_length tokens and flagged
with "truncated": true.

Work policy: one request must not hold the model for long. /classify requests are
merged into batches of at most FIC_MAX_BATCH_SIZE texts; a page is scored in chunks of
PAGE_CHUNK_UNITS units. Every model call runs on the worker's one model thread, in
arrival order, so page chunks and /classify batches take turns and a /classify request
waits for at most one chunk per page in flight (at most PAGES_IN_FLIGHT pages are scored
at once). One thread also means one set of torch threads and one malloc arena per worker,
and the tokenizer is never used by two threads at once (fast tokenizers refuse that).

Admission: a /classify request is admitted or refused whole, before any of its work starts
(guards.ModelQueue, timed on every model call); BentoML's batcher, which would shed part of
an admitted request, gets a latency limit as long as the request timeout. A page whose
client has disconnected stops being scored at its next chunk.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Optional, Sequence

import attrs
import bentoml
from pydantic import AfterValidator, BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.guards import (EdgeGuard, ModelQueue, RequestLimits, quiet_client_errors,
                            refuse_new_connections_on_sigterm, use_read_deadline)
from serving.settings import choice, switch, whole_number
from runtime.precision import AUTO, CHOICES
from runtime.text import PREPROCESSING_VERSION

MODEL_TAG = os.environ.get("FIC_MODEL", "").strip() or "future-industry-classifier:latest"
MAX_BATCH_SIZE = whole_number("FIC_MAX_BATCH_SIZE", 64)
MAX_LATENCY_MS = whole_number("FIC_MAX_LATENCY_MS", 10000)
BATCHING = switch("FIC_BATCHING", True)
MAX_TEXTS = whole_number("FIC_MAX_TEXTS", 256)
MAX_TEXT_CHARS = whole_number("FIC_MAX_TEXT_CHARS", 2000)
# 200,000 characters is several times a long news page; splitting one made of the shortest
# possible sentences costs about a second of CPU on these machines (500,000 cost 2.4 s).
MAX_PAGE_CHARS = whole_number("FIC_MAX_PAGE_CHARS", 200000)
# Units bound the model work and the reply: 2,000 units is about 30 s of a BERT-base model
# in fp32 on two cores and at most ~1 MB of per-unit JSON plus the page's own text.
MAX_PAGE_UNITS = whole_number("FIC_MAX_PAGE_UNITS", 2000)
# The largest valid request, 256 texts x 2,000 characters each sent as a JSON surrogate pair
# (\ud83d\ude00, 12 bytes), is about 6.2 MB; anything larger cannot be a valid request.
MAX_BODY_BYTES = whole_number("FIC_MAX_BODY_BYTES", 8 * 1024 * 1024)
# 8 MiB in 30 s is about 2.2 Mbit/s: slower links should send fewer texts per request.
READ_TIMEOUT_S = whole_number("FIC_READ_TIMEOUT_S", 30)
THREADS = whole_number("FIC_THREADS", None)
PRECISION = choice("FIC_PRECISION", AUTO, CHOICES)
WORKERS = whole_number("FIC_WORKERS", 1)

TIMEOUT_S = 120  # BentoML's per-request timeout (504)
PAGE_CHUNK_UNITS = 32  # a page's units per model call: short enough that /classify is not kept waiting
PAGES_IN_FLIGHT = 2  # pages scored at once; more wait (without using the CPU) for a slot
API_PATHS = ("/classify", "/classify_page")
MAX_URL_CHARS = 4096

quiet_client_errors()  # runs in the worker, which imports this module before serving
# Admission to the model for /classify (one per worker process; see guards.ModelQueue).
QUEUE = ModelQueue(budget_s=MAX_LATENCY_MS / 1000)


@functools.lru_cache(maxsize=1)
def kept_character_pattern() -> str:
    """A regex class of the characters `clean` keeps in the Basic Multilingual Plane.

    A text must contain one, or it is empty after cleaning (400): everything but
    whitespace, control, format, private-use and the invisible characters `clean`
    strips. Only BMP characters are listed: OpenAPI patterns are ECMAScript regexes,
    which cannot name a character above U+FFFF the way Python does; so that the
    document and the service agree, a text made only of such characters (emoji, CJK
    extension B) is refused too — the model has nothing to read in it.
    """
    from runtime.text import _INVISIBLE

    def kept(cp: int) -> bool:
        ch = chr(cp)
        return not (ch.isspace() or _INVISIBLE.match(ch) or unicodedata.category(ch) in {"Cc", "Cf", "Co", "Cs"})

    ranges: list[tuple[int, int]] = []
    for cp in range(0x10000):
        if not kept(cp):
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return "[" + "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges) + "]"


_KEPT = re.compile(kept_character_pattern())


def _has_text(text: str) -> str:
    # Exactly the pattern the OpenAPI document states; characters above U+FFFF alone do not count
    # (see kept_character_pattern). A text with one such character is never empty after cleaning
    # (test_documented_text_pattern_agrees_with_cleaning checks every character). The text is
    # returned as sent: BentoML 1.4 attaches the annotations of a list item twice, so this runs
    # twice per text, and a validator that cleaned would clean twice (薴 -> 苧 -> 苎) and refuse
    # a text whose cleaned form lies above U+FFFF (䫟 -> 𫖲). `classify` cleans once.
    if not _KEPT.search(text):
        raise ValueError("text is empty after cleaning (only whitespace, invisible, control or private-use "
                         "characters, or only characters above U+FFFF); send real text")
    return text


# Validation runs per request, before adaptive batching merges requests, so one bad
# request never fails the others in its batch. The model receives cleaned text.
UnitText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_CHARS, description=f"one unit of text, at most {MAX_TEXT_CHARS} characters"),
    AfterValidator(_has_text),
]


class UnitResult(BaseModel):
    labels: list[str] = Field(description="directions whose probability passed their threshold, or ['other']")
    top_label: str
    scores: dict[str, float] = Field(description="probability per label id; other = 1 - max direction probability")
    truncated: bool = Field(description="the text was longer than the model's max_length tokens and was cut")


class PageUnit(UnitResult):
    index: int
    start: int = Field(description="character offset of the unit in the submitted page")
    end: int
    text: str = Field(description="the cleaned unit text the model saw")


class PageSummary(BaseModel):
    units: int
    units_per_label: dict[str, int]
    other_share: float = Field(description="share of units labelled other (noise or off-topic)")
    dominant_directions: list[str]


class PageResult(BaseModel):
    url: Optional[str] = None
    units: list[PageUnit]
    summary: PageSummary


class Limits(BaseModel):
    max_texts: int
    max_text_chars: int
    max_page_chars: int
    max_page_units: int
    max_body_bytes: int


class Metadata(BaseModel):
    model: str
    labels: list[str]
    thresholds: dict[str, float]
    preprocessing_version: str
    max_length: int
    base_model: Optional[str] = None
    from_scratch: Optional[bool] = None
    # The model averages its encoder's probabilities with a TF-IDF model's (model.tfidf_fusion).
    tfidf_fusion: bool = False
    metrics: Optional[dict[str, Any]] = Field(
        None, description="headline metrics of the trained model on the test split its training run held out "
                          "(metrics_split), not on the units it trained or tuned thresholds on")
    metrics_split: Optional[str] = Field(None, description="what the metrics were measured on")
    limits: Limits
    batching: dict[str, Any]
    threads: Optional[int] = None
    precision: str


def error(status: int, message: str) -> JSONResponse:
    """An error reply shaped like BentoML's own ({"error": ...}); BentoML's InvalidArgument
    reply is a one-element list instead, which matches no schema."""
    return JSONResponse({"error": message}, status_code=status)


@attrs.frozen
class LocalModel(bentoml.models.BentoModel):
    """A model reference that must be in the local store: no BentoCloud lookup, a clear message when missing.

    Without it, `bentoml serve` before `serving.package` ends with BentoML's
    "failed to fetch from remote because No cloud context default found".
    """

    def _require_stored(self) -> None:
        if self.stored is None:
            home = os.environ.get("BENTOML_HOME", "~/bentoml")
            raise bentoml.exceptions.NotFound(
                f"model {self.tag} is not in the local BentoML store ({home}): run python -m serving.package "
                "ARTIFACT first (ARTIFACT = the output folder of python -m training.train), or set FIC_MODEL "
                "to a tag listed by bentoml models list"
            )

    def to_info(self, alias: str | None = None):  # noqa: ANN201 - BentoML's type
        self._require_stored()
        return super().to_info(alias)

    def resolve(self, base_path=None):  # noqa: ANN001, ANN201 - BentoML's types
        self._require_stored()
        return super().resolve(base_path)


async def _metadata(request: Request) -> JSONResponse:
    service = bentoml.get_current_service()
    if service is None:
        return error(503, "service is starting")
    return JSONResponse(service.metadata().model_dump())


# BentoML APIs are POST-only; a tiny Starlette app serves the read-only GET. BentoML mounts
# it passively, so it only answers the paths it defines and shadows nothing.
metadata_app = Starlette(routes=[Route("/metadata", _metadata, methods=["GET"])])


@bentoml.asgi_app(metadata_app, path="/")
@bentoml.service(
    traffic={"timeout": TIMEOUT_S, "max_concurrency": 256},
    resources={"cpu": str(THREADS or 2)},
    workers=WORKERS,
)
class FutureIndustryClassifier:
    model_ref = LocalModel(MODEL_TAG)

    def __init__(self) -> None:
        from runtime.classifier import Classifier
        from runtime.threads import configure_threads

        self.threads = configure_threads(THREADS)
        stored = self.model_ref  # BentoML resolves the reference to the stored model on access
        self.tag = str(stored.tag)
        self.info = dict(stored.info.metadata)
        self.classifier = Classifier.from_artifact(stored.path, batch_size=MAX_BATCH_SIZE, precision=PRECISION)
        # Admission needs the model's speed before the first request: time one batch of
        # max-length texts now (after an untimed call that pays the first-call costs).
        QUEUE.unit_cap = self.classifier.max_length
        probe = ["氢" * self.classifier.max_length] * 8
        self.classifier.predict(probe[:1], already_clean=True)
        started = time.perf_counter()
        self.classifier.predict(probe, already_clean=True)
        QUEUE.observe(probe, time.perf_counter() - started)
        # One line per worker saying what it serves: the tag alone does not say how it scores.
        logging.getLogger("bentoml.fic").info(  # under "bentoml": BentoML shows only its own loggers
            "serving %s: precision %s (%s), %s, %s torch threads", self.tag, self.classifier.precision,
            self.classifier.precision_source,
            "encoder + TF-IDF mean" if self.classifier.lexical is not None else "encoder alone", self.threads)
        logging.getLogger("bentoml.fic").info(
            "model time %.1f ms per max-length text (%d tokens); /classify queueing budget %d ms",
            1000 * QUEUE.seconds_per_unit * QUEUE.units([self.classifier.max_length]),
            self.classifier.max_length, MAX_LATENCY_MS)
        # The one thread that runs the model (see "Work policy"); its queue is first come, first served.
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.page_slots = asyncio.Semaphore(PAGES_IN_FLIGHT)

    @bentoml.on_startup
    def _refuse_connections_after_sigterm(self) -> None:
        from bentoml._internal.configuration.containers import BentoMLContainer

        # Not under --development/--reload: there a worker is restarted alone, and closing
        # the shared listening socket would leave its successor nothing to accept on.
        if not BentoMLContainer.development_mode.get():
            refuse_new_connections_on_sigterm()

    def metadata(self) -> Metadata:
        c = self.classifier
        return Metadata(
            model=self.tag,
            labels=c.labels,
            thresholds=dict(zip(c.directions, c.thresholds)),
            preprocessing_version=PREPROCESSING_VERSION,
            max_length=c.max_length,
            base_model=self.info.get("base_model"),
            from_scratch=self.info.get("from_scratch"),
            tfidf_fusion=c.lexical is not None,
            metrics=self.info.get("metrics"),
            # The split is few units (artifact.json test_split says which): a reader must know these
            # are held-out test numbers, and how few stand behind them.
            metrics_split=f"test split: {c.meta['test_split']}" if c.meta.get("test_split") else "test split",
            limits=Limits(max_texts=MAX_TEXTS, max_text_chars=MAX_TEXT_CHARS, max_page_chars=MAX_PAGE_CHARS,
                          max_page_units=MAX_PAGE_UNITS, max_body_bytes=MAX_BODY_BYTES),
            batching={"enabled": BATCHING, "max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS},
            threads=self.threads,
            precision=c.precision,
        )

    async def _predict(self, texts: Sequence[str], already_clean: bool) -> list:
        def timed() -> tuple[list, float]:  # timed on the model thread: the wait for it is not model time
            started = time.perf_counter()
            predictions = self.classifier.predict(texts, already_clean=already_clean)
            return predictions, time.perf_counter() - started

        predictions, seconds = await asyncio.get_running_loop().run_in_executor(self.model_thread, timed)
        QUEUE.observe(texts, seconds)
        return predictions

    # Admission (RequestLimits + QUEUE) decides what is refused, before the batcher; the batcher's
    # own limit is the request timeout, so it never sheds part of an admitted request.
    @bentoml.api(batchable=BATCHING, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=TIMEOUT_S * 1000)
    async def classify(
        self, texts: Annotated[list[UnitText], Field(min_length=1, max_length=MAX_TEXTS)]
    ) -> list[UnitResult]:
        """Classify units of text. Concurrent requests are merged into one model call."""
        # The texts arrive as sent (see _has_text) and are cleaned here, once, as the batch scorer does.
        return [UnitResult(**p.to_dict()) for p in await self._predict(texts, already_clean=False)]

    @bentoml.api
    async def classify_page(
        self,
        text: Annotated[str, Field(min_length=1, max_length=MAX_PAGE_CHARS, description="raw crawled page text")],
        url: Annotated[Optional[str], Field(max_length=MAX_URL_CHARS)] = None,
        ctx: bentoml.Context = None,  # BentoML passes the request context; not part of the schema
    ) -> PageResult:  # or an error JSONResponse, which BentoML sends as it is
        """Split a raw page into units, classify each and summarise the page."""
        from runtime.summary import summarize, unit_records
        from runtime.text import split_units

        def refuse(status: int, message: str) -> JSONResponse:
            if ctx is not None:  # given ctx, BentoML sends ctx.response's status, not the returned response's
                ctx.response.status_code = status
            return error(status, message)

        # A page with no units (only punctuation or invisible characters) is a page with
        # nothing on it, not a malformed request: it gets units [] and a zero summary.
        units = await asyncio.to_thread(split_units, text)
        if len(units) > MAX_PAGE_UNITS:
            return refuse(413, f"the page splits into {len(units)} units, more than FIC_MAX_PAGE_UNITS="
                               f"{MAX_PAGE_UNITS}; send it in parts, or score large documents offline with "
                               "python -m serving.batch")
        predictions: list = []
        async with self.page_slots:
            for start in range(0, len(units), PAGE_CHUNK_UNITS):
                # A client that has gone gets no answer: stop instead of scoring the rest (four
                # abandoned 2,000-unit pages kept the e5 worker busy for two minutes).
                if ctx is not None and await ctx.request.is_disconnected():
                    logging.getLogger("bentoml.fic").info(
                        "page abandoned by its client: stopped after %d of %d units", start, len(units))
                    return refuse(499, "client closed the request")
                chunk = [unit.text for unit in units[start:start + PAGE_CHUNK_UNITS]]
                predictions += await self._predict(chunk, already_clean=True)  # split_units cleaned them
        c = self.classifier

        def result() -> PageResult:  # thousands of models: built off the event loop, like the splitting
            return PageResult(url=url, units=[PageUnit(**u) for u in unit_records(units, predictions)],
                              summary=PageSummary(**summarize(predictions, c.labels, c.other)))

        return await asyncio.to_thread(result)


# ----------------------------------------------------------------------------- the OpenAPI document


def _error_response(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _mark_nullable(schema: Any) -> None:
    """BentoML flattens Optional[str] to {"type": "string", "default": null}; say null is allowed."""
    if isinstance(schema, dict):
        for prop in (schema.get("properties") or {}).values():
            if isinstance(prop, dict) and "default" in prop and prop["default"] is None and "type" in prop:
                prop["nullable"] = True
        for value in schema.values():
            _mark_nullable(value)
    elif isinstance(schema, list):
        for value in schema:
            _mark_nullable(value)


def openapi_spec() -> dict:
    """BentoML's document, corrected to match what the service does."""
    spec = FutureIndustryClassifier.openapi_spec.asdict()
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = {
        "type": "object", "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "what went wrong and what to do"},
            "detail": {"type": "array", "items": {"type": "object"},
                       "description": "validation errors: loc (where), msg (what), type"},
        },
    }
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas["Metadata"] = Metadata.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schemas["Metadata"].pop("$defs", {}))
    errors = {
        "400": _error_response("Bad Request: the message and detail say which field and what to fix"),
        "413": _error_response("Too Large: body over FIC_MAX_BODY_BYTES or a page over FIC_MAX_PAGE_UNITS units"),
        "415": _error_response("Unsupported Media Type: send JSON"),
        "429": _error_response("Too many requests in flight; retry after Retry-After seconds"),
        "503": _error_response("Overloaded; retry after Retry-After seconds"),
        "504": _error_response("The request took longer than the service timeout"),
        "500": _error_response("Internal Server Error"),
    }
    for path in API_PATHS:
        operation = spec["paths"][path]["post"]
        ok = operation["responses"].get(200, operation["responses"].get("200"))  # BentoML keys by int
        operation["responses"] = {"200": ok, **errors}
        operation["requestBody"]["required"] = True  # a missing body is a 400, as for any missing field
    texts = spec["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    texts["properties"]["texts"]["items"]["pattern"] = kept_character_pattern()
    page = spec["paths"]["/classify_page"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    page["properties"]["text"]["description"] += (f"; at most {MAX_PAGE_UNITS} units after splitting "
                                                  "(more gets 413)")
    spec["paths"]["/metadata"] = {"get": {
        "tags": ["Service APIs"], "operationId": "FutureIndustryClassifier__metadata",
        "description": "Model tag, labels, thresholds, preprocessing version, training metrics and limits.",
        "responses": {"200": {"description": "Successful Response",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Metadata"}}}},
                      "503": _error_response("The service is starting")},
    }}
    _mark_nullable(spec)
    return spec


# ----------------------------------------------------------------------------- wiring the guards

FutureIndustryClassifier.add_asgi_middleware(RequestLimits, max_body_bytes=MAX_BODY_BYTES, paths=API_PATHS,
                                             queue=QUEUE, queued_paths=("/classify",))


class _GuardedService(type(FutureIndustryClassifier)):
    """The same BentoML service whose ASGI app is wrapped in `EdgeGuard`.

    Middleware added with `add_asgi_middleware` runs inside BentoML's metrics middleware,
    which has already taken the raw path as a label by then; only a wrapper around the
    whole app (built by `to_asgi`, which the worker calls) can turn unknown paths away first.
    """

    __slots__ = ()

    def to_asgi(self, is_main: bool = True):  # noqa: ANN201 - an ASGI app
        use_read_deadline(READ_TIMEOUT_S)  # the worker calls this before it starts uvicorn
        return EdgeGuard(super().to_asgi(is_main), spec=openapi_spec, api_paths=API_PATHS,
                         max_body_bytes=MAX_BODY_BYTES)


FutureIndustryClassifier.__class__ = _GuardedService
