"""A small typed client for the HTTP service.

    from serving.client import ClassifierClient

    with ClassifierClient("http://localhost:3000") as client:
        results = client.classify(["发展低空经济和商业航天", "上一篇 2024年9月24日"])
        page = client.classify_page(open("page.txt", encoding="utf-8").read(), url="https://...")

Why not `bentoml.SyncHTTPClient`: it accepts `classify(texts="一段文字")` and sends the
string as a list of its characters, so each character is scored on its own. This client
refuses anything but a list of strings, splits long lists into requests of the server's
`max_texts`, retries a shed request (503/429) after the server's Retry-After, and raises
`ServiceError` with the server's message for every other error. It needs only httpx.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence, TypedDict

import httpx


class EvidenceSpan(TypedDict):
    start: int  # offsets into the cleaned text beside it: text[start:end] == the span's text
    end: int
    text: str
    weight: float


class _Explained(TypedDict, total=False):
    evidence: dict[str, list[EvidenceSpan]]  # explain=True only: direction -> spans, strongest first


class UnitResult(_Explained):
    labels: list[str]
    top_label: str
    scores: dict[str, float]
    truncated: bool


class ExplainedUnitResult(UnitResult):
    text: str  # the cleaned text the evidence offsets index


class PageUnit(UnitResult):
    index: int
    start: int
    end: int
    text: str


class PageSummary(TypedDict):
    units: int
    units_per_label: dict[str, int]
    other_share: float
    dominant_directions: list[str]


class PageResult(TypedDict):
    url: Optional[str]
    units: list[PageUnit]
    summary: PageSummary


class ServiceError(RuntimeError):
    """A non-2xx reply: `status`, the server's `message`, and validation `detail` when given."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}" + (f" {detail}" if detail else ""))
        self.status = status
        self.message = message
        self.detail = detail


def check_texts(texts: object) -> list[str]:
    """The texts as a list, or a TypeError that says what was passed instead."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, not a single string (it would be scored one character "
                        "at a time); wrap it: classify([text])")
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
    return list(texts)


class ClassifierClient:
    """Blocking client; one HTTP connection pool, closed by `close()` or the `with` block."""

    def __init__(self, url: str = "http://localhost:3000", timeout: float = 120.0, retries: int = 2) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._max_texts: int | None = None
        self._max_explain: int | None = None

    def __enter__(self) -> "ClassifierClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, payload: dict | None = None) -> Any:
        for attempt in range(self.retries + 1):
            response = self._http.request(method, path, json=payload)
            if response.status_code in (429, 503) and attempt < self.retries:
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            break
        if response.is_success:
            return response.json()
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        if isinstance(body, list) and body and isinstance(body[0], dict):
            body = body[0]
        if not isinstance(body, dict):
            body = {"error": str(body)[:500]}
        raise ServiceError(response.status_code, str(body.get("error", "")), body.get("detail"))

    def metadata(self) -> dict[str, Any]:
        return self._request("GET", "/metadata")

    def classify(self, texts: Sequence[str], explain: bool = False) -> list[UnitResult] | list[ExplainedUnitResult]:
        """One result per text, in order; lists longer than the server's max_texts go in several requests.
        explain=True: each result also has `text` (cleaned) and `evidence`, requests of at most the server's
        limits.max_explain_units texts."""
        items = check_texts(texts)
        if not items:
            raise ValueError("texts is empty; pass at least one text")
        if not isinstance(explain, bool):
            raise TypeError(f"explain must be True or False, got {type(explain).__name__}")
        if self._max_texts is None:
            limits = self.metadata()["limits"]
            self._max_texts = int(limits["max_texts"])
            self._max_explain = limits.get("max_explain_units")
        size = self._max_texts
        if explain:
            if not self._max_explain:
                raise ServiceError(501, "this service cannot explain (its /metadata has no limits.max_explain_units)")
            size = min(size, int(self._max_explain))
        results: list[UnitResult] = []
        for start in range(0, len(items), size):
            payload: dict[str, Any] = {"texts": items[start:start + size]}
            if explain:  # sent only when asked: a request without the field is batched with others
                payload["explain"] = True
            results += self._request("POST", "/classify", payload)
        return results

    def classify_page(self, text: str, url: str | None = None, explain: bool = False) -> PageResult:
        """The page's units with spans and predictions, and its summary (explain=True: with each unit's evidence)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be the page as one string, got {type(text).__name__}")
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url must be a string or None, got {type(url).__name__}")
        if not isinstance(explain, bool):
            raise TypeError(f"explain must be True or False, got {type(explain).__name__}")
        payload: dict[str, Any] = {"text": text, "url": url}
        if explain:
            payload["explain"] = True
        return self._request("POST", "/classify_page", payload)
