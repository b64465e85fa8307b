"""POST /classify with an `explain` field goes to the service's unbatched explaining API.

BentoML 1.4's adaptive batching merges the one argument of a batchable API across requests, and
refuses a second one (`batch_infer`: "Batch inference function only accept one argument"), so the
batched /classify cannot take `explain` beside `texts`. This middleware sends a /classify request
whose JSON body has an `explain` key (true, false or anything else: the API validates it) to
EXPLAIN_PATH, an API with both parameters and no batching; every other /classify request is batched
as before. Clients only ever see /classify: a request sent to EXPLAIN_PATH directly gets 404.

It runs inside RequestLimits (added after it), so the body has passed the size and admission checks
and is already whole in memory; the key test parses it once more (a few ms for the largest bodies,
against seconds of model time).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.guards import send_json

EXPLAIN_PATH = "/classify_explained"
_ROUTED = "fic.explain_routed"  # scope key: set when this middleware sent the request to EXPLAIN_PATH


def asks_to_explain(body: bytes) -> bool:
    """Whether a JSON body is an object with an `explain` key (invalid JSON: no, /classify answers it)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and "explain" in payload


class ExplainRoute:
    def __init__(self, app: ASGIApp, public_path: str = "/classify", internal_path: str = EXPLAIN_PATH) -> None:
        self.app = app
        self.public_path = public_path
        self.internal_path = internal_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == self.internal_path and not scope.get(_ROUTED):
            await send_json(send, 404, {"error": "no such endpoint; see /docs.json for the API"})
            return
        if scope["path"] != self.public_path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if messages[-1]["type"] == "http.request" and asks_to_explain(body):
            scope = {**scope, "path": self.internal_path, "raw_path": self.internal_path.encode(), _ROUTED: True}

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)
