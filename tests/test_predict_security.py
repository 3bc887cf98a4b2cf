"""/predict input security: local-path confinement, URL and address policy, bounded downloads.

Every test goes through a real aiohttp server on 127.0.0.1 (and, for downloads, a real local
origin server). The analyzer is a stand-in here because each case is refused or accepted before
analysis; the end-to-end runs with the real Analyzer are in test_predict_model.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path

import pytest
from predict_support import Origin, StandInAnalyzer, post_predict, predict_client, running, serve_cfg

from ftcn.predict_service import PredictService
from ftcn.safe_fetch import FetchPolicy, PinnedResolver, Refusal, address_allowed, check_url


@pytest.fixture()
def real_video(videos_dir: Path) -> Path:
    return videos_dir / "real" / "hdtf_real_RD_Radio10_clip_2s_512.mp4"


@pytest.fixture()
def allowed(tmp_path: Path) -> Path:
    d = tmp_path / "allowed"
    d.mkdir()
    return d


def _service(**serve) -> tuple[PredictService, StandInAnalyzer]:
    analyzer = StandInAnalyzer()
    return PredictService(serve_cfg(**serve), analyzer), analyzer


def _ask(service: PredictService, body) -> tuple[int, dict]:
    async def go() -> tuple[int, dict]:
        async with predict_client(service) as client:
            return await post_predict(client, body)

    return asyncio.run(go())


def _assert_refused(status: int, body: dict, code: int, error: str) -> None:
    assert status == code, body
    assert body["error"] == error
    assert isinstance(body["reason"], str) and body["reason"]


# ------------------------------------------------------------------ local paths


def test_local_video_in_allowed_dir_is_analysed(allowed: Path, real_video: Path) -> None:
    target = allowed / "copy.mp4"
    target.write_bytes(real_video.read_bytes())
    service, analyzer = _service(allowed_dirs=[str(allowed)])
    status, body = _ask(service, {"file_path": str(target), "max_frames": 12, "batch_size": 2})
    assert status == 200, body
    assert body["prediction"] == "REAL" and body["df_probability"] == 0.25
    assert analyzer.calls[0]["path"] == target.resolve()
    assert analyzer.calls[0]["max_frames"] == 12 and analyzer.calls[0]["batch_size"] == 2
    assert target.exists(), "local input files must never be deleted"
    # relative paths are taken relative to the first allowed directory
    status, body = _ask(service, {"file_path": "copy.mp4"})
    assert status == 200, body


@pytest.mark.parametrize(
    ("file_path", "code", "error"),
    [
        ("file:///etc/passwd", 400, "unsupported_scheme"),
        ("../../etc/passwd", 403, "path_traversal"),
        ("{allowed}/../../../etc/passwd", 403, "path_traversal"),
        ("/etc/passwd", 403, "path_not_allowed"),
        ("{allowed}/nope.mp4", 404, "not_found"),
        ("{allowed}", 400, "not_a_file"),
        ("{allowed}/a\x00b", 400, "invalid_path"),
        ("ftp://example.com/video.mp4", 400, "unsupported_scheme"),
        ("gopher://127.0.0.1:70/", 400, "unsupported_scheme"),
    ],
)
def test_local_and_scheme_refusals(allowed: Path, file_path: str, code: int, error: str) -> None:
    service, analyzer = _service(allowed_dirs=[str(allowed)])
    status, body = _ask(service, {"file_path": file_path.format(allowed=allowed)})
    _assert_refused(status, body, code, error)
    assert analyzer.calls == []


def test_existence_outside_allowed_dirs_is_not_revealed(allowed: Path, tmp_path: Path) -> None:
    service, _ = _service(allowed_dirs=[str(allowed)])
    (tmp_path / "exists.mp4").write_bytes(b"x")
    a = _ask(service, {"file_path": str(tmp_path / "exists.mp4")})
    b = _ask(service, {"file_path": str(tmp_path / "absent.mp4")})
    assert a == b and a[0] == 403


def test_symlink_escaping_allowed_dir_is_refused(allowed: Path, tmp_path: Path, real_video: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "v.mp4").write_bytes(real_video.read_bytes())
    (allowed / "link.mp4").symlink_to(outside / "v.mp4")
    (allowed / "dirlink").symlink_to(outside, target_is_directory=True)
    service, analyzer = _service(allowed_dirs=[str(allowed)])
    for p in (allowed / "link.mp4", allowed / "dirlink" / "v.mp4"):
        status, body = _ask(service, {"file_path": str(p)})
        _assert_refused(status, body, 403, "path_not_allowed")
    assert analyzer.calls == []


def test_local_files_disabled_without_allowed_dirs(real_video: Path) -> None:
    service, _ = _service(allowed_dirs=[])
    status, body = _ask(service, {"file_path": str(real_video)})
    _assert_refused(status, body, 403, "local_files_disabled")


def test_non_video_file_is_refused(allowed: Path) -> None:
    (allowed / "notes.mp4").write_text("hello, not a video\n" * 50)
    (allowed / "empty.mp4").write_bytes(b"")
    service, analyzer = _service(allowed_dirs=[str(allowed)])
    for name in ("notes.mp4", "empty.mp4"):
        status, body = _ask(service, {"file_path": str(allowed / name)})
        _assert_refused(status, body, 422, "not_a_video")
        assert str(allowed) not in body["reason"]
    assert analyzer.calls == []


def test_video_longer_than_limit_is_refused(allowed: Path, real_video: Path) -> None:
    target = allowed / "v.mp4"
    target.write_bytes(real_video.read_bytes())  # 2.07 s
    service, analyzer = _service(allowed_dirs=[str(allowed)], max_duration_s=1.5)
    status, body = _ask(service, {"file_path": str(target)})
    _assert_refused(status, body, 422, "video_too_long")
    assert analyzer.calls == []
    service, analyzer = _service(allowed_dirs=[str(allowed)], max_duration_s=3)
    assert _ask(service, {"file_path": str(target)})[0] == 200


# ------------------------------------------------------------------ request bodies and auth


def test_malformed_requests(allowed: Path) -> None:
    service, analyzer = _service(allowed_dirs=[str(allowed)], max_request_bytes=1024)

    async def go() -> None:
        async with predict_client(service) as client:
            cases = [
                (b"{not json", 400, "invalid_json"),
                (b"\xff\xfe", 400, "invalid_json"),
                (b"[1, 2]", 400, "invalid_request"),
                (b'{"file_path": 5}', 400, "invalid_request"),
                (b'{"file_path": ""}', 400, "invalid_request"),
                (b'{"max_frames": 10}', 400, "invalid_request"),
                (b'{"file_path": "a.mp4", "max_frames": 0}', 400, "invalid_request"),
                (b'{"file_path": "a.mp4", "max_frames": "10"}', 400, "invalid_request"),
                (b'{"file_path": "a.mp4", "max_frames": true}', 400, "invalid_request"),
                (b'{"file_path": "a.mp4", "batch_size": 1000}', 400, "invalid_request"),
                (b'{"file_path": "' + b"a" * 2000 + b'"}', 413, "body_too_large"),
            ]
            for raw, code, error in cases:
                resp = await client.post("/predict", data=raw, headers={"Content-Type": "application/json"})
                _assert_refused(resp.status, await resp.json(), code, error)

            async def chunks():
                for _ in range(10):
                    yield b" " * 512  # no Content-Length: counted while streaming

            resp = await client.post("/predict", data=chunks())
            _assert_refused(resp.status, await resp.json(), 413, "body_too_large")
            resp = await client.get("/predict")
            _assert_refused(resp.status, await resp.json(), 405, "method_not_allowed")
            resp = await client.get("/nowhere")
            assert resp.status == 404 and "error" in await resp.json()
            resp = await client.get("/healthcheck")  # still alive after all of that
            assert resp.status == 200 and (await resp.json())["healthy"] is True

    asyncio.run(go())
    assert analyzer.calls == []


def test_bearer_token_on_predict_only(allowed: Path, real_video: Path) -> None:
    (allowed / "v.mp4").write_bytes(real_video.read_bytes())
    service, _ = _service(allowed_dirs=[str(allowed)], token="s3cret")

    async def go() -> None:
        async with predict_client(service) as client:
            body = {"file_path": str(allowed / "v.mp4")}
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
                status, js = await post_predict(client, body, headers=headers)
                _assert_refused(status, js, 401, "unauthorized")
            status, js = await post_predict(client, body, headers={"Authorization": "Bearer s3cret"})
            assert status == 200, js
            assert (await client.get("/healthcheck")).status == 200

    asyncio.run(go())


# ------------------------------------------------------------------ URLs and downloads


def test_loopback_origin_refused_by_default_and_accepted_when_allowed(real_video: Path, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"

    async def go() -> None:
        async with running(Origin(real_video)) as origin:
            for host in ("127.0.0.1", "localhost"):
                service, analyzer = _service(download_dir=str(downloads))
                async with predict_client(service) as client:
                    status, body = await post_predict(client, {"file_path": origin.url("/video.mp4", host)})
                _assert_refused(status, body, 403, "address_not_allowed")
                assert analyzer.calls == []
            assert origin.hits == [], "a refused address must never be contacted"

            for serve in ({"allowed_networks": ["127.0.0.1/32"]}, {"allow_private_networks": True}):
                service, analyzer = _service(download_dir=str(downloads), **serve)
                async with predict_client(service) as client:
                    status, body = await post_predict(client, {"file_path": origin.url("/video.mp4")})
                assert status == 200, body
                assert body["source"] == {"type": "url", "bytes": len(origin.video_bytes), "redirects": 0}
                assert analyzer.calls[0]["bytes"] == origin.video_bytes
                assert not analyzer.calls[0]["path"].exists(), "the download must be deleted after the job"
            assert list(downloads.iterdir()) == []

            # a host name listed in allowed_hosts may resolve to a private address
            service, analyzer = _service(download_dir=str(downloads), allowed_hosts=["LOCALHOST"])
            async with predict_client(service) as client:
                status, body = await post_predict(client, {"file_path": origin.url("/video.mp4", "localhost")})
            assert status == 200, body

    asyncio.run(go())


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/video.mp4",
        "http://127.0.0.2:{port}/video.mp4",
        "http://[::1]:{port}/video.mp4",
        "http://[::ffff:10.0.0.1]:{port}/video.mp4",
        "http://0.0.0.0:{port}/video.mp4",
    ],
)
def test_redirect_to_private_address_is_refused(target: str, tmp_path: Path) -> None:
    async def go() -> None:
        async with running(Origin()) as origin:
            # the origin itself is allowed; where it redirects to is not
            service, analyzer = _service(allowed_networks=["127.0.0.1/32"], download_dir=str(tmp_path))
            to = target.format(port=origin.server.port)
            async with predict_client(service) as client:
                status, body = await post_predict(client, {"file_path": origin.url(f"/redirect?to={to}")})
            _assert_refused(status, body, 403, "address_not_allowed")
            assert len(origin.hits) == 1 and origin.hits[0].startswith("/redirect?")
            assert analyzer.calls == []

    asyncio.run(go())


def test_redirects_are_followed_and_rechecked(real_video: Path, tmp_path: Path) -> None:
    async def go() -> None:
        async with running(Origin(real_video)) as origin:
            service, analyzer = _service(allowed_networks=["127.0.0.1/32"], download_dir=str(tmp_path))
            async with predict_client(service) as client:
                status, body = await post_predict(client, {"file_path": origin.url("/redirect?to=/video.mp4")})
                assert status == 200, body
                assert body["source"]["redirects"] == 1
                status, body = await post_predict(client, {"file_path": origin.url("/loop")})
                _assert_refused(status, body, 400, "too_many_redirects")
                status, body = await post_predict(
                    client, {"file_path": origin.url("/redirect?to=file:///etc/passwd")}
                )
                _assert_refused(status, body, 400, "unsupported_scheme")
            assert origin.hits.count("/loop") == 6  # the request + max_redirects (5) hops

    asyncio.run(go())


def test_credentials_in_url_are_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(Origin()) as origin:
            service, _ = _service(allow_private_networks=True)
            async with predict_client(service) as client:
                for url in (
                    origin.url("/video.mp4").replace("http://", "http://user:pw@"),
                    origin.url("/video.mp4").replace("http://", "http://user@"),
                ):
                    status, body = await post_predict(client, {"file_path": url})
                    _assert_refused(status, body, 400, "credentials_in_url")
                status, body = await post_predict(
                    client, {"file_path": origin.url("/redirect?to=http://u:p@127.0.0.1/")}
                )
                _assert_refused(status, body, 400, "credentials_in_url")
            assert origin.hits == ["/redirect?to=http://u:p@127.0.0.1/"]

    asyncio.run(go())


def test_oversize_downloads_are_refused_and_cleaned_up(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(Origin()) as origin:
            service, analyzer = _service(
                allowed_networks=["127.0.0.1/32"], max_download_bytes=100_000, download_dir=str(tmp_path)
            )
            async with predict_client(service) as client:
                for path in ("/big", "/chunked"):  # Content-Length / streamed count
                    status, body = await post_predict(client, {"file_path": origin.url(path)})
                    _assert_refused(status, body, 413, "download_too_large")
            assert analyzer.calls == []
            assert list(tmp_path.iterdir()) == []

    asyncio.run(go())


def test_download_failures_and_timeouts(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(Origin()) as origin:
            service, _ = _service(
                allowed_networks=["127.0.0.1/32"], download_timeout_s=0.5, download_dir=str(tmp_path)
            )
            async with predict_client(service) as client:
                cases = [
                    ("/missing", 400, "download_failed"),
                    ("/notes.txt", 422, "not_a_video"),
                    ("/slow", 408, "download_timeout"),
                ]
                for path, code, error in cases:
                    status, body = await post_predict(client, {"file_path": origin.url(path)})
                    _assert_refused(status, body, code, error)
                closed = f"http://127.0.0.1:{_free_port()}/video.mp4"
                status, body = await post_predict(client, {"file_path": closed})
                _assert_refused(status, body, 400, "download_failed")
            assert list(tmp_path.iterdir()) == []

    asyncio.run(go())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_numeric_host_forms_cannot_reach_loopback() -> None:
    service, _ = _service()
    for url in ("http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://[::]/"):
        status, body = _ask(service, {"file_path": url})
        assert 400 <= status < 500 and body["error"] in {"address_not_allowed", "dns_failed"}, (url, body)


# ------------------------------------------------------------------ address policy (units)


@pytest.mark.parametrize(
    ("addr", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # CGNAT
        ("169.254.169.254", False),
        ("169.254.1.1", False),
        ("224.0.0.1", False),  # multicast is "global" to the stdlib
        ("240.0.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", False),  # IPv4-mapped are reserved space: never fetched from
        ("2002:7f00:1::1", False),  # 6to4 wrapping 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 wrapping 10.0.0.1
    ],
)
def test_default_address_policy(addr: str, public: bool) -> None:
    assert address_allowed(ipaddress.ip_address(addr), "example.com", FetchPolicy()) is public


def test_metadata_stays_refused_with_private_networks_allowed() -> None:
    policy = FetchPolicy.from_config({"allow_private_networks": True})
    assert address_allowed(ipaddress.ip_address("10.0.0.1"), "h", policy)
    for addr in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert not address_allowed(ipaddress.ip_address(addr), "h", policy)
    explicit = FetchPolicy.from_config({"allowed_networks": ["169.254.169.254/32"]})
    assert address_allowed(ipaddress.ip_address("169.254.169.254"), "h", explicit)


def test_check_url_units() -> None:
    assert check_url("https://example.com/a.mp4").host == "example.com"
    for bad, error in [
        ("javascript:alert(1)", "unsupported_scheme"),
        ("http://", "invalid_url"),
        ("http://a:b@example.com/", "credentials_in_url"),
        ("http://example.com:99999/", "invalid_url"),
    ]:
        with pytest.raises(Refusal) as ei:
            check_url(bad)
        assert ei.value.error == error and 400 <= ei.value.status < 500


def test_pinned_resolver_only_answers_checked_hosts() -> None:
    async def go() -> None:
        r = PinnedResolver()
        r.pin("Example.com", [(2, "93.184.216.34")])
        res = await r.resolve("example.com", 443)
        assert [x["host"] for x in res] == ["93.184.216.34"] and res[0]["port"] == 443
        with pytest.raises(OSError):
            await r.resolve("other.example", 80)

    asyncio.run(go())


def test_allowed_dirs_resolve_symlinked_roots(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    policy = FetchPolicy.from_config({"allowed_dirs": [str(tmp_path / "alias")]})
    assert policy.allowed_dirs == (real.resolve(),)
    assert os.path.realpath(tmp_path / "alias") == str(real.resolve())
