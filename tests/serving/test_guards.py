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
