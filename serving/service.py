"""HTTP service for the future-industry classifier (BentoML 1.4).

    bentoml serve serving.service:FutureIndustryClassifier --host 127.0.0.1

POST /classify {"texts": [...]} (adaptive batching), POST /classify_page {"text": page, "url": ...},
GET /metadata, GET /docs.json; /livez, /readyz and /metrics are BentoML's. Settings: FIC_*
variables (serving/settings.py, docs/operations.md), read once at import, so an unusable value
stops `bentoml serve` with one line. The guards (body limit, read deadline, unknown paths,
admission) are in serving/guards.py.

Work policy: one request must not hold the model for long. Every model call runs on the
worker's one model thread, in arrival order: /classify batches and page chunks of about
PAGE_CHUNK_S of model time take turns, so a /classify request waits for at most one chunk per page
in flight (at most PAGES_IN_FLIGHT pages at once). One thread also means one set of torch
threads per worker, and a tokenizer never used by two threads at once (fast tokenizers refuse).
A /classify request is admitted or refused whole before any of its work starts (guards.ModelQueue,
timed on every model call); a page whose client has gone stops at its next chunk.

Evidence: both APIs take "explain": true (runtime/evidence.py). /classify's batched API can have only
one parameter, so serving/explain_route.py sends a /classify request with an `explain` field to
classify_explained, which is not batched. Explaining runs one unit per turn on the model thread and is
bounded by FIC_MAX_EXPLAIN_UNITS per request (seconds per unit and direction, docs/evidence.md); its time
is not fed to the admission estimate, which times scoring only.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Optional, Sequence

import bentoml
from pydantic import Field, StrictBool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from runtime.precision import ONNX_PRECISIONS
from runtime.text import PREPROCESSING_VERSION
from serving.explain_route import EXPLAIN_PATH, ExplainRoute
from serving.guards import (
    ModelQueue,
    RequestLimits,
    development_mode,
    guarded_service_class,
    quiet_client_errors,
    refuse_new_connections_on_sigterm,
)
from serving.openapi import openapi_spec
from serving.schemas import Limits, Metadata, PageResult, PageSummary, PageUnit, UnitResult, error, unit_text
from serving.settings import ServiceSettings
from serving.store import LocalModel

SETTINGS = ServiceSettings.from_env()
TIMEOUT_S = 120  # BentoML's per-request timeout (504)
# Estimated model time of one page chunk: a /classify request waits for at most one chunk per page in
# flight, so this bounds its wait behind pages. Sized by time, not units: 32 units were 0.1 s on a small
# model and over a second on the e5 default; a chunk this long still batches enough units to run efficiently.
PAGE_CHUNK_S = 0.25
SWITCH_INTERVAL_S = 0.0005  # the worker's GIL switch interval (Python's default: 0.005)
PAGES_IN_FLIGHT = 2  # pages scored at once; more wait (without using the CPU) for a slot
API_PATHS = ("/classify", "/classify_page")
MAX_URL_CHARS = 4096
log = logging.getLogger("bentoml.fic")  # under "bentoml": BentoML shows only its own loggers

quiet_client_errors()  # runs in the worker, which imports this module before serving
QUEUE = ModelQueue(budget_s=SETTINGS.max_latency_ms / 1000)  # /classify admission, one per worker process
UnitText = unit_text(SETTINGS.max_text_chars)


def _refuse(ctx: bentoml.Context | None, status: int, message: str) -> JSONResponse:
    if ctx is not None:  # given ctx, BentoML sends ctx.response's status, not the returned response's
        ctx.response.status_code = status
    return error(status, message)


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
    resources={"cpu": str(SETTINGS.threads or 2)},
    workers=SETTINGS.workers,
    service_class=guarded_service_class(
        lambda service: openapi_spec(service, API_PATHS, SETTINGS.max_page_units), api_paths=API_PATHS,
        max_body_bytes=SETTINGS.max_body_bytes, read_timeout_s=SETTINGS.read_timeout_s),
)
class FutureIndustryClassifier:
    model_ref = LocalModel(SETTINGS.model)

    def __init__(self) -> None:
        from runtime.classifier import Classifier
        from runtime.threads import configure_threads

        self.threads = configure_threads(SETTINGS.threads)
        stored = self.model_ref  # BentoML resolves the reference to the stored model on access
        self.tag = str(stored.tag)
        self.info = dict(stored.info.metadata)
        self.classifier = Classifier.from_artifact(stored.path, batch_size=SETTINGS.max_batch_size,
                                                   precision=SETTINGS.precision)
        c = self.classifier
        # Admission needs the model's speed before the first request: time one batch of
        # max-length texts now (after an untimed call that pays the first-call costs).
        QUEUE.unit_cap = c.max_length
        probe = ["氢" * c.max_length] * 8
        c.predict(probe[:1], already_clean=True)
        started = time.perf_counter()
        c.predict(probe, already_clean=True)
        QUEUE.observe(probe, time.perf_counter() - started)
        log.info("serving %s: precision %s (%s), %s, %s torch threads", self.tag, c.precision, c.precision_source,
                 "encoder + TF-IDF mean" if c.lexical is not None else "encoder alone", self.threads)
        log.info("model time %.1f ms per max-length text (%d tokens); /classify queueing budget %d ms",
                 1000 * QUEUE.seconds_per_unit * QUEUE.units([c.max_length]), c.max_length, SETTINGS.max_latency_ms)
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")  # see "Work policy"
        # The model thread gives the GIL up in every torch op and must win it back from the event loop,
        # which keeps it for up to the switch interval (5 ms): py-spy showed the model thread waiting for
        # it ~10% of its time under 32 clients. A shorter interval hands it back sooner.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        # The model's many long-lived Python objects need no collecting: frozen, full collections skip them.
        gc.collect()
        gc.freeze()
        self.page_slots = asyncio.Semaphore(PAGES_IN_FLIGHT)

    @bentoml.on_startup
    def _refuse_connections_after_sigterm(self) -> None:
        # Not under --development/--reload: there a worker is restarted alone, and closing
        # the shared listening socket would leave its successor nothing to accept on.
        if not development_mode():
            refuse_new_connections_on_sigterm()

    @property
    def explainer(self):
        """Evidence for explain=true (runtime/evidence.py), or None: it needs the torch weights, which a classifier
        loaded for an onnx precision has released."""
        if "_explainer" not in self.__dict__:
            from runtime.evidence import Explainer

            c = self.classifier
            self._explainer = Explainer(c) if c.precision not in ONNX_PRECISIONS else None
        return self._explainer

    def metadata(self) -> Metadata:
        c, s = self.classifier, SETTINGS
        return Metadata(
            model=self.tag, labels=c.labels, thresholds=dict(zip(c.directions, c.thresholds)),
            preprocessing_version=PREPROCESSING_VERSION, max_length=c.max_length,
            base_model=self.info.get("base_model"), from_scratch=self.info.get("from_scratch"),
            tfidf_fusion=c.lexical is not None, metrics=self.info.get("metrics"),
            # The split is few units (artifact.json test_split says which): a reader must know these
            # are held-out test numbers, and how few stand behind them.
            metrics_split=f"test split: {c.meta['test_split']}" if c.meta.get("test_split") else "test split",
            limits=Limits(max_texts=s.max_texts, max_text_chars=s.max_text_chars, max_page_chars=s.max_page_chars,
                          max_page_units=s.max_page_units, max_page_ms=s.max_page_ms, max_body_bytes=s.max_body_bytes,
                          # None: this worker cannot explain (an onnx precision released the torch weights)
                          max_explain_units=s.max_explain_units if c.precision not in ONNX_PRECISIONS else None),
            batching={"enabled": s.batching, "max_batch_size": s.max_batch_size, "max_latency_ms": s.max_latency_ms},
            threads=self.threads, precision=c.precision,
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
    @bentoml.api(batchable=SETTINGS.batching, max_batch_size=SETTINGS.max_batch_size, max_latency_ms=TIMEOUT_S * 1000)
    async def classify(
        self, texts: Annotated[list[UnitText], Field(min_length=1, max_length=SETTINGS.max_texts)]
    ) -> list[UnitResult]:
        """Classify units of text. Concurrent requests are merged into one model call."""
        # The texts arrive as sent (schemas.has_text) and are cleaned here, once, as the batch scorer does.
        return [UnitResult(**p.to_dict()) for p in await self._predict(texts, already_clean=False)]

    async def _explain(self, texts: Sequence[str], predictions: Sequence) -> list[dict]:
        """Evidence per cleaned text, one text per turn on the model thread: explaining takes seconds per unit and
        direction, and /classify batches and page chunks run between the turns (see "Work policy")."""
        loop = asyncio.get_running_loop()
        out: list[dict] = []
        for text, prediction in zip(texts, predictions):
            out += await loop.run_in_executor(self.model_thread, self.explainer.explain, [text], [prediction])
        return out

    def _cannot_explain(self, units: int) -> tuple[int, str] | None:
        """Why an explain=true request with `units` units to explain is refused, or None."""
        if self.explainer is None:
            return 501, (f"explain needs the model's torch weights, and this service scores with precision "
                         f"{self.classifier.precision}, which does without them; serve with FIC_PRECISION=fp32 (or "
                         "int8, bf16) to explain, or score offline with python -m serving.batch --explain")
        if units > SETTINGS.max_explain_units:
            return 413, (f"explain=true explains at most FIC_MAX_EXPLAIN_UNITS={SETTINGS.max_explain_units} units per "
                         f"request (seconds of CPU per unit and direction), and this one has {units}; send "
                         "fewer, or explain a whole crawl offline with python -m serving.batch --explain")
        return None

    # /classify requests with an "explain" field arrive here (serving/explain_route.py): BentoML batches an API of
    # one parameter only. Not batched; the route is not reachable from outside.
    @bentoml.api(route=EXPLAIN_PATH)
    async def classify_explained(
        self, texts: Annotated[list[UnitText], Field(min_length=1, max_length=SETTINGS.max_texts)],
        explain: StrictBool = False,
        ctx: bentoml.Context = None,  # BentoML passes the request context; not part of the schema
    ) -> list[UnitResult]:  # or an error JSONResponse
        """Classify units of text; with explain=true also return each cleaned text and its evidence."""
        if not explain:
            return [UnitResult(**p.to_dict()) for p in await self._predict(texts, already_clean=False)]
        refused = self._cannot_explain(len(texts))
        if refused:
            return _refuse(ctx, *refused)
        from runtime.text import clean

        cleaned = await asyncio.to_thread(lambda: [clean(text) for text in texts])  # as predict would clean them
        predictions = await self._predict(cleaned, already_clean=True)
        evidence = await self._explain(cleaned, predictions)
        return [UnitResult(**p.to_dict(), text=text, evidence=spans)
                for p, text, spans in zip(predictions, cleaned, evidence)]

    @bentoml.api
    async def classify_page(
        self,
        text: Annotated[str, Field(min_length=1, max_length=SETTINGS.max_page_chars,
                                   description="raw crawled page text")],
        url: Annotated[Optional[str], Field(max_length=MAX_URL_CHARS)] = None,
        explain: StrictBool = False,
        ctx: bentoml.Context = None,  # BentoML passes the request context; not part of the schema
    ) -> PageResult:  # or an error JSONResponse, which BentoML sends as it is
        """Split a raw page into units, classify each and summarise the page (explain=true: with each unit's
        evidence)."""
        from runtime.summary import summarize, unit_records
        from runtime.text import split_units

        def refuse(status: int, message: str) -> JSONResponse:
            return _refuse(ctx, status, message)

        if explain and self.explainer is None:  # said before any work
            return refuse(*self._cannot_explain(0))
        # A page with no units (only punctuation or invisible characters) is a page with
        # nothing on it, not a malformed request: it gets units [] and a zero summary.
        units = await asyncio.to_thread(split_units, text)
        if len(units) > SETTINGS.max_page_units:
            return refuse(413, f"the page splits into {len(units)} units, more than FIC_MAX_PAGE_UNITS="
                               f"{SETTINGS.max_page_units}; send it in parts, or score large documents offline "
                               "with python -m serving.batch")
        # Refused before any work when it would need more model time than a page may take (FIC_MAX_PAGE_MS).
        needs_s = QUEUE.units(len(unit.text) for unit in units) * (QUEUE.idle_seconds_per_unit or 0.0)
        if needs_s * 1000 > SETTINGS.max_page_ms:
            return refuse(413, f"the page's {len(units)} units need about {needs_s:.1f} s of model time on this "
                               f"worker, more than FIC_MAX_PAGE_MS={SETTINGS.max_page_ms} allows; send it in parts, "
                               "or score large documents offline with python -m serving.batch")
        predictions: list = []
        async with self.page_slots:
            # Chunked by the model's measured speed now, after any wait for a slot.
            for start, end in QUEUE.chunks([len(unit.text) for unit in units], PAGE_CHUNK_S):
                # A client that has gone gets no answer: stop instead of scoring the rest.
                if ctx is not None and await ctx.request.is_disconnected():
                    log.info("page abandoned by its client: stopped after %d of %d units", start, len(units))
                    return refuse(499, "client closed the request")
                chunk = [unit.text for unit in units[start:end]]
                predictions += await self._predict(chunk, already_clean=True)  # split_units cleaned them
        c = self.classifier
        evidence = None
        if explain:
            texts = [unit.text for unit in units]
            refused = self._cannot_explain(sum(1 for p in predictions if p.labels != [c.other]))
            if refused:
                return refuse(*refused)
            evidence = await self._explain(texts, predictions)

        def result() -> PageResult:  # thousands of models: built off the event loop, like the splitting
            return PageResult(url=url, units=[PageUnit(**u) for u in unit_records(units, predictions, evidence)],
                              summary=PageSummary(**summarize(predictions, c.labels, c.other)))

        return await asyncio.to_thread(result)


FutureIndustryClassifier.add_asgi_middleware(RequestLimits, max_body_bytes=SETTINGS.max_body_bytes, paths=API_PATHS,
                                             queue=QUEUE, queued_paths=("/classify",))
# Inside RequestLimits (added after it): sends /classify requests with an "explain" field to classify_explained.
FutureIndustryClassifier.add_asgi_middleware(ExplainRoute)
