"""/predict job handling: off-loop execution, bounded queue (429), failures that never kill the server.

A gated stand-in analyzer holds a job "running" in its worker thread for as long as the test
wants, so the timing-sensitive properties are checked deterministically.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from predict_support import StandInAnalyzer, post_predict, predict_client, serve_cfg

from ftcn.predict_service import PredictService


@pytest.fixture()
def video(tmp_path: Path, videos_dir: Path) -> Path:
    target = tmp_path / "v.mp4"
    target.write_bytes((videos_dir / "real" / "hdtf_real_RD_Radio10_clip_2s_512.mp4").read_bytes())
    return target


async def _wait_for(event: threading.Event, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not event.is_set():
        assert time.monotonic() - t0 < timeout, "the job never started"
        await asyncio.sleep(0.01)


def test_healthcheck_answers_while_a_job_runs(video: Path) -> None:
    gate = threading.Event()
    analyzer = StandInAnalyzer(gate=gate)
    service = PredictService(serve_cfg(allowed_dirs=[str(video.parent)]), analyzer)

    async def go() -> None:
        async with predict_client(service) as client:
            job = asyncio.create_task(post_predict(client, {"file_path": str(video)}))
            await _wait_for(analyzer.started)
            t0 = time.monotonic()
            resp = await client.get("/healthcheck")
            latency = time.monotonic() - t0
            health = await resp.json()
            assert resp.status == 200 and health["healthy"] is True
            assert latency < 1.0
            assert health["jobs"]["running"] == 1 and health["jobs"]["waiting"] == 0
            assert not job.done()
            gate.set()
            status, body = await job
            assert status == 200 and body["prediction"] == "REAL"
            health = await (await client.get("/healthcheck")).json()
            assert health["jobs"]["running"] == 0 and health["jobs"]["completed"] == 1

    asyncio.run(go())


def test_queue_limit_answers_429(video: Path) -> None:
    gate = threading.Event()
    analyzer = StandInAnalyzer(gate=gate)
    cfg = serve_cfg(allowed_dirs=[str(video.parent)], max_concurrent_jobs=1, queue_limit=1)
    service = PredictService(cfg, analyzer)

    async def go() -> None:
        async with predict_client(service) as client:
            body = {"file_path": str(video)}
            first = asyncio.create_task(post_predict(client, body))
            await _wait_for(analyzer.started)
            second = asyncio.create_task(post_predict(client, body))
            for _ in range(200):  # until the second one is admitted and waiting
                health = await (await client.get("/healthcheck")).json()
                if health["jobs"]["waiting"] == 1:
                    break
                await asyncio.sleep(0.01)
            assert health["jobs"] == {**health["jobs"], "running": 1, "waiting": 1}
            resp = await client.post("/predict", json=body)
            assert resp.status == 429
            assert (await resp.json())["error"] == "queue_full"
            assert resp.headers["Retry-After"]
            gate.set()
            results = await asyncio.gather(first, second)
            assert [s for s, _ in results] == [200, 200]
            assert len(analyzer.calls) == 2
            # the slots are free again
            status, _ = await post_predict(client, body)
            assert status == 200

    asyncio.run(go())


def test_internal_failure_is_500_json_and_server_survives(video: Path) -> None:
    analyzer = StandInAnalyzer(fail=RuntimeError("secret internals /opt/model.bin"))
    service = PredictService(serve_cfg(allowed_dirs=[str(video.parent)]), analyzer)

    async def go() -> None:
        async with predict_client(service) as client:
            for _ in range(2):
                resp = await client.post("/predict", json={"file_path": str(video)})
                assert resp.status == 500
                body = await resp.json()
                assert body["error"] == "internal_error"
                text = str(body)
                assert "Traceback" not in text and "secret" not in text and "/opt" not in text
            health = await (await client.get("/healthcheck")).json()
            assert health["healthy"] is True and health["jobs"]["failed"] == 2
            assert health["jobs"]["running"] == 0 and health["jobs"]["waiting"] == 0

    asyncio.run(go())


def test_add_predict_routes_mounts_on_an_existing_app(video: Path) -> None:
    """The live analyzer's server mounts the same routes next to its own."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from ftcn.predict_service import add_predict_routes

    async def streams(_request: web.Request) -> web.Response:
        return web.json_response({"streams": []})

    async def own_health(_request: web.Request) -> web.Response:
        return web.json_response({"healthy": True, "owner": "host"})

    service = PredictService(serve_cfg(allowed_dirs=[str(video.parent)]), StandInAnalyzer())
    plain = web.Application()
    plain.router.add_get("/streams", streams)
    add_predict_routes(plain, service)
    host = web.Application()
    host.router.add_get("/healthcheck", own_health)
    add_predict_routes(host, service)  # keeps the host's /healthcheck

    async def go() -> None:
        async with TestClient(TestServer(plain, host="127.0.0.1")) as client:
            assert (await client.get("/streams")).status == 200
            health = await (await client.get("/healthcheck")).json()
            assert health["healthy"] is True and health["model"]["id"] == "ftcn_tt"
            status, body = await post_predict(client, {"file_path": str(video)})
            assert status == 200 and body["df_probability"] == 0.25
        async with TestClient(TestServer(host, host="127.0.0.1")) as client:
            assert (await (await client.get("/healthcheck")).json())["owner"] == "host"
            status, body = await post_predict(client, {"file_path": str(video)})
            assert status == 200 and body["prediction"] == "REAL"

    asyncio.run(go())
