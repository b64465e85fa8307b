"""The one place that reaches past BentoML's public API (serving/guards.py), checked in process: a BentoML
upgrade that changes `service_class`, `to_asgi`, uvicorn's protocol table or the development-mode flag
fails here, before a live server would show it."""

from __future__ import annotations

import asyncio
import json

import httpx


def test_the_service_app_is_wrapped_by_the_edge_guard_with_the_read_deadline(tmp_path, monkeypatch) -> None:
    import uvicorn.config

    from serving.guards import EdgeGuard, ReadDeadlineProtocol, development_mode
    from serving.openapi import openapi_spec
    from serving.service import API_PATHS, SETTINGS, FutureIndustryClassifier

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))  # building the app needs no model in the store
    monkeypatch.setitem(uvicorn.config.HTTP_PROTOCOLS, "auto", uvicorn.config.HTTP_PROTOCOLS["auto"])
    app = FutureIndustryClassifier.to_asgi()
    assert isinstance(app, EdgeGuard)
    assert uvicorn.config.HTTP_PROTOCOLS["auto"] == f"{ReadDeadlineProtocol.__module__}:ReadDeadlineProtocol"
    assert ReadDeadlineProtocol.read_timeout_s == SETTINGS.read_timeout_s
    assert isinstance(development_mode(), bool)

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get(path)

    unknown = asyncio.run(get("/wp-login.php"))
    assert unknown.status_code == 404 and "docs.json" in unknown.json()["error"]
    spec = asyncio.run(get("/docs.json"))
    assert spec.status_code == 200
    assert spec.json() == json.loads(json.dumps(openapi_spec(FutureIndustryClassifier, API_PATHS,
                                                             SETTINGS.max_page_units)))
    assert set(API_PATHS) | {"/metadata"} <= set(spec.json()["paths"])


def test_the_adaptive_batcher_holds_a_lone_request_briefly_after_a_burst() -> None:
    """After a burst, BentoML's batcher held a lone request on an idle model for about the burst's mean queue
    wait (its `optimizer.wait`) until ~50 new batches replaced the history; bound_cork caps that hold."""
    import time

    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    from serving.guards import bound_cork

    async def run() -> tuple[float, float, float]:
        dispatcher = CorkDispatcher(max_latency_in_ms=120_000, max_batch_size=4, fallback=lambda: None,
                                    get_batch_size=lambda item: 1)
        bound_cork([dispatcher], 0.05)

        async def model(items):
            await asyncio.sleep(0.02)  # model time per call; calls run one at a time
            return list(items)

        call = dispatcher(model)
        for _ in range(3):  # the batcher's warm-up and its training phases, then a burst
            await asyncio.gather(*(call(i) for i in range(200)))
        burst_wait = sum(wait for _, _, wait in dispatcher.optimizer.o_stat) / len(dispatcher.optimizer.o_stat)
        dispatcher.optimizer.trigger_refresh()
        started = time.perf_counter()
        assert await call("lone") == "lone"
        return burst_wait, dispatcher.optimizer.wait, time.perf_counter() - started

    burst_wait, cork, lone = asyncio.run(run())
    assert burst_wait > 0.2  # the burst queued requests behind the model for a while
    assert cork <= 0.05  # unbounded, it is the burst's mean wait
    assert lone < burst_wait / 2


def test_the_service_bounds_the_cork_of_its_batched_api(tmp_path, monkeypatch) -> None:
    import serving.guards
    from serving.service import FutureIndustryClassifier

    bounded: list = []
    original = serving.guards.bound_cork
    monkeypatch.setattr(serving.guards, "bound_cork",
                        lambda dispatchers, cap: (bounded.extend(dispatchers), original(bounded, cap)))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    FutureIndustryClassifier.to_asgi()
    assert len(bounded) == 1  # /classify, the one batchable API
    assert type(bounded[0].optimizer).__name__ == "BoundedCork"
    # Each reply's media type is known once, not found by generating the response's JSON schema per reply.
    assert {name: api.output_spec.media_type for name, api in FutureIndustryClassifier.apis.items()
            if name in ("classify", "classify_page")} == {"classify": "application/json",
                                                          "classify_page": "application/json"}
