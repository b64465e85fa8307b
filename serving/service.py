"""HTTP service for the future-industry classifier (BentoML 1.4).

    bentoml serve serving.service:FutureIndustryClassifier

Endpoints
    POST /classify        {"texts": [...]}  -> one result per text, in order (adaptive batching)
    POST /classify_page   {"text": "<raw page>", "url": optional} -> units with spans and predictions + summary
    GET  /metadata        model tag, labels, thresholds, preprocessing version, training metrics
    GET  /livez, /readyz, /metrics  (BentoML's own)

Settings come from the environment, read once at import:
    FIC_MODEL             model tag in the BentoML store (default future-industry-classifier:latest)
    FIC_MAX_BATCH_SIZE    adaptive batching: most texts per model call (default 64)
    FIC_MAX_LATENCY_MS    adaptive batching: latency budget per request; requests that would wait longer
                          are shed with 503 (default 10000: a BERT-base batch of 32 takes seconds on 2 cores)
    FIC_BATCHING          "off" turns adaptive batching off (for benchmarks)
    FIC_MAX_TEXTS         most texts in one /classify request (default 256)
    FIC_MAX_TEXT_CHARS    longest text accepted by /classify (default 2000 characters)
    FIC_MAX_PAGE_CHARS    longest page accepted by /classify_page (default 500000 characters)
    FIC_THREADS           torch threads per worker (default: the CPU quota)
    FIC_PRECISION         fp32, bf16, fp16 (GPU), int8 (CPU) or auto (default): auto keeps the fastest
                          variant whose label sets agree with fp32 on >= 99% of held-out units

Length policy: a text longer than FIC_MAX_TEXT_CHARS is rejected (400) — send whole
pages to /classify_page, which splits them. A text within the limit but longer than
the model's max_length tokens is scored on its first max_length tokens and flagged
with "truncated": true.
"""

from __future__ import annotations

import os
from typing import Annotated, Optional

import bentoml
from pydantic import AfterValidator, BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from training.text import PREPROCESSING_VERSION, clean

MODEL_TAG = os.environ.get("FIC_MODEL", "future-industry-classifier:latest")
MAX_BATCH_SIZE = int(os.environ.get("FIC_MAX_BATCH_SIZE", "64"))
MAX_LATENCY_MS = int(os.environ.get("FIC_MAX_LATENCY_MS", "10000"))
BATCHING = os.environ.get("FIC_BATCHING", "on").lower() not in {"off", "0", "false", "no"}
MAX_TEXTS = int(os.environ.get("FIC_MAX_TEXTS", "256"))
MAX_TEXT_CHARS = int(os.environ.get("FIC_MAX_TEXT_CHARS", "2000"))
MAX_PAGE_CHARS = int(os.environ.get("FIC_MAX_PAGE_CHARS", "500000"))
THREADS = int(os.environ["FIC_THREADS"]) if os.environ.get("FIC_THREADS") else None
PRECISION = os.environ.get("FIC_PRECISION", "auto")


def _cleaned_unit(text: str) -> str:
    cleaned = clean(text)
    if not cleaned:
        raise ValueError("text is empty or only whitespace/invisible characters after cleaning; send real text")
    return cleaned


# Validation runs per request, before adaptive batching merges requests, so one bad
# request never fails the others in its batch. The model receives cleaned text.
UnitText = Annotated[
    str,
    Field(max_length=MAX_TEXT_CHARS, description=f"one unit of text, at most {MAX_TEXT_CHARS} characters"),
    AfterValidator(_cleaned_unit),
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


async def _metadata(request: Request) -> JSONResponse:
    service = bentoml.get_current_service()
    if service is None:
        return JSONResponse({"error": "service is starting"}, status_code=503)
    return JSONResponse(service.metadata())


# BentoML APIs are POST-only; a tiny Starlette app serves the read-only GET. BentoML mounts
# it passively, so it only answers the paths it defines and shadows nothing.
metadata_app = Starlette(routes=[Route("/metadata", _metadata, methods=["GET"])])


@bentoml.asgi_app(metadata_app, path="/")
@bentoml.service(
    traffic={"timeout": 120, "max_concurrency": 256},
    resources={"cpu": str(THREADS or 2)},
    workers=1,
)
class FutureIndustryClassifier:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from training.predict import Classifier
        from training.runtime import configure_threads

        self.threads = configure_threads(THREADS)
        stored = self.model_ref  # BentoML resolves the reference to the stored model on access
        self.tag = str(stored.tag)
        self.info = dict(stored.info.metadata)
        self.classifier = Classifier.from_artifact(stored.path, batch_size=MAX_BATCH_SIZE, precision=PRECISION)

    def metadata(self) -> dict:
        c = self.classifier
        return {
            "model": self.tag,
            "labels": c.labels,
            "thresholds": dict(zip(c.directions, c.thresholds)),
            "preprocessing_version": PREPROCESSING_VERSION,
            "max_length": c.max_length,
            "base_model": self.info.get("base_model"),
            "from_scratch": self.info.get("from_scratch"),
            "metrics": self.info.get("metrics"),
            "limits": {"max_texts": MAX_TEXTS, "max_text_chars": MAX_TEXT_CHARS, "max_page_chars": MAX_PAGE_CHARS},
            "batching": {"enabled": BATCHING, "max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS},
            "threads": self.threads,
            "precision": c.precision,
        }

    @bentoml.api(batchable=BATCHING, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def classify(
        self, texts: Annotated[list[UnitText], Field(min_length=1, max_length=MAX_TEXTS)]
    ) -> list[UnitResult]:
        """Classify units of text. Concurrent requests are merged into one model call."""
        predictions = self.classifier.predict(texts, already_clean=True)
        return [UnitResult(**p.to_dict()) for p in predictions]

    @bentoml.api
    def classify_page(
        self,
        text: Annotated[str, Field(min_length=1, max_length=MAX_PAGE_CHARS, description="raw crawled page text")],
        url: Optional[str] = None,
    ) -> PageResult:
        """Split a raw page into units, classify each and summarise the page."""
        from serving.scoring import score_pages

        ((units, summary),) = score_pages(self.classifier, [text])
        if not units:
            raise bentoml.exceptions.InvalidArgument("the page holds no text units after cleaning (empty or punctuation only)")
        return PageResult(url=url, units=[PageUnit(**u) for u in units], summary=PageSummary(**summary))
