"""The service's request and response models, and its error reply."""

from __future__ import annotations

import re
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BaseModel, Field
from starlette.responses import JSONResponse

from runtime.text import kept_character_pattern

_KEPT = re.compile(kept_character_pattern())


def has_text(text: str) -> str:
    """The text as sent, if it holds a character `clean` keeps (the pattern the OpenAPI document states).

    It does not clean: BentoML 1.4 attaches the annotations of a list item twice, so this runs twice
    per text, and a validator that cleaned would clean twice (薴 -> 苧 -> 苎) and refuse a text whose
    cleaned form lies above U+FFFF (䫟 -> 𫖲). The service cleans once, as the batch scorer does.
    """
    if not _KEPT.search(text):
        raise ValueError("text is empty after cleaning (only whitespace, invisible, control or private-use "
                         "characters, or only characters above U+FFFF); send real text")
    return text


def unit_text(max_chars: int) -> Any:
    """One /classify text: 1..max_chars characters with something to read. Validation runs per request,
    before adaptive batching merges requests, so one bad request never fails the others in its batch."""
    return Annotated[
        str,
        Field(min_length=1, max_length=max_chars, description=f"one unit of text, at most {max_chars} characters"),
        AfterValidator(has_text),
    ]


class EvidenceSpan(BaseModel):
    start: int = Field(description="offset of the span's first character in the cleaned text beside it")
    end: int = Field(description="offset after its last character: text[start:end] is the span")
    text: str
    weight: float = Field(description="the span's share of the direction's evidence (0-1; spans strongest first)")


def _absent(value: Any) -> bool:
    return value is None


# Left out of a reply that did not ask for evidence, so the default reply is what it always was.
EVIDENCE_FIELD = Field(
    None, exclude_if=_absent,
    description="with explain=true: for each direction in labels, the spans of the cleaned text that drove it, "
                "strongest first (runtime/evidence.py); absent otherwise")


class UnitResult(BaseModel):
    labels: list[str] = Field(description="directions whose probability passed their threshold, or ['other']")
    top_label: str
    scores: dict[str, float] = Field(description="probability per label id; other = 1 - max direction probability")
    truncated: bool = Field(description="the text was longer than the model's max_length tokens and was cut")
    text: Optional[str] = Field(None, exclude_if=_absent,
                                description="with explain=true: the cleaned text the model saw, which the evidence "
                                            "offsets index; absent otherwise")
    evidence: Optional[dict[str, list[EvidenceSpan]]] = EVIDENCE_FIELD


class PageUnit(UnitResult):
    index: int
    start: int = Field(description="character offset of the unit in the submitted page")
    end: int
    text: str = Field(description="the cleaned unit text the model saw (evidence offsets index it)")


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
    max_page_ms: int = Field(description="most model time one page may need, estimated at this worker's idle speed; "
                                         "a longer page is refused with 413 before its work starts")
    max_body_bytes: int
    max_explain_units: Optional[int] = Field(
        None, description="with explain=true: most texts of one /classify request, or units with a direction of "
                          "one page; null when this service cannot explain (an onnx precision has no torch weights)")


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
