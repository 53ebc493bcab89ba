"""The gateway over real HTTP in front of a real decoder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import pyvips

from tests import processes
from tests.conftest import Stack, start_gateway

pytestmark = pytest.mark.integration

PROFILE3 = "http://iiif.io/api/image/3/level2.json"
PROFILE2 = "http://iiif.io/api/image/2/level2.json"


def test_info_json_v3(http: httpx.Client, stack: Stack) -> None:
    resp = http.get("/iiif/3/sample-tiled/info.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["access-control-allow-origin"] == "*"
    assert f"<{PROFILE3}>" in resp.headers["link"]
    info = resp.json()
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert info["id"] == f"{stack.gateway_url}/iiif/3/sample-tiled"
    assert info["type"] == "ImageService3"
    assert info["profile"] == "level2"
    assert (info["width"], info["height"]) == (1200, 900)
    assert info["tiles"][0]["width"] == 256
    assert info["tiles"][0]["scaleFactors"][:3] == [1, 2, 4]
    assert {"width": 150, "height": 113} in info["sizes"]
    assert info["maxArea"] == 25_000_000
    assert {"webp", "tif", "gif", "jp2"} <= set(info["extraFormats"])
    assert "mirroring" in info["extraFeatures"]


def test_info_json_v2(http: httpx.Client, stack: Stack) -> None:
    info = http.get("/iiif/2/sample-pyramid/info.json").json()
    assert info["@context"] == "http://iiif.io/api/image/2/context.json"
    assert info["@id"] == f"{stack.gateway_url}/iiif/2/sample-pyramid"
    assert info["profile"][0] == PROFILE2
    assert "jp2" in info["profile"][1]["formats"]
    assert info["tiles"][0]["width"] == 256


def test_info_json_ld_when_asked(http: httpx.Client) -> None:
    resp = http.get("/iiif/3/sample-tiled/info.json", headers={"Accept": "application/ld+json"})
    assert resp.headers["content-type"].startswith("application/ld+json")
    assert "http://iiif.io/api/image/3/context.json" in resp.headers["content-type"]


def test_info_id_follows_forwarded_headers(http: httpx.Client) -> None:
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "images.example.org",
        "X-Forwarded-Prefix": "/viewer",
    }
    info = http.get("/iiif/3/sample-photo/info.json", headers=headers).json()
    assert info["id"] == "https://images.example.org/viewer/iiif/3/sample-photo"


def test_base_uri_redirects_to_info(http: httpx.Client, stack: Stack) -> None:
    resp = http.get("/iiif/3/sample-photo", follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == f"{stack.gateway_url}/iiif/3/sample-photo/info.json"


def test_encoded_slash_identifier(http: httpx.Client, stack: Stack) -> None:
    info = http.get("/iiif/3/nested%2Fphoto/info.json").json()
    assert info["id"] == f"{stack.gateway_url}/iiif/3/nested%2Fphoto"
    resp = http.get("/iiif/3/nested%2Fphoto/full/100,/0/default.jpg")
    assert resp.status_code == 200


def test_image_headers_and_conditional_get(http: httpx.Client, stack: Stack) -> None:
    url = "/iiif/3/sample-pyramid/0,0,512,512/256,/0/default.jpg"
    resp = http.get(url)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/jpeg"
    assert int(resp.headers["content-length"]) == len(resp.content)
    links = resp.headers["link"]
    assert (
        f'<{stack.gateway_url}/iiif/3/sample-pyramid/0,0,512,512/256,256/0/default.jpg>;rel="canonical"'
        in links
    )
    assert f"<{PROFILE3}>" in links
    assert resp.headers["cache-control"] == "public, max-age=86400"
    assert resp.headers["last-modified"]
    etag = resp.headers["etag"]
    again = http.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    other = http.get("/iiif/3/sample-pyramid/0,0,512,512/128,/0/default.jpg")
    assert other.headers["etag"] != etag


def test_head_sends_headers_without_rendering(http: httpx.Client) -> None:
    resp = http.head("/iiif/3/sample-photo/full/max/0/default.png")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    assert resp.content == b""


def test_cors_preflight(http: httpx.Client) -> None:
    resp = http.options(
        "/iiif/3/sample-photo/info.json",
        headers={
            "Origin": "https://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-custom",
        },
    )
    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "GET" in resp.headers["access-control-allow-methods"]
    assert resp.headers["access-control-allow-headers"] == "x-custom"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/iiif/3/sample-photo/0,0,0,10/max/0/default.jpg", 400),
        ("/iiif/3/sample-photo/5000,5000,10,10/max/0/default.jpg", 400),
        ("/iiif/3/sample-photo/full/5000,/0/default.jpg", 400),
        ("/iiif/3/sample-photo/full/full/0/default.jpg", 400),
        ("/iiif/3/sample-photo/full/max/1e3/default.jpg", 400),
        ("/iiif/3/sample-photo/full/max/nan/default.jpg", 400),
        ("/iiif/3/sample-photo/full/max/0/fancy.jpg", 400),
        ("/iiif/3/sample-photo/full/99999999999999999999,/0/default.jpg", 400),
        ("/iiif/3/sample-photo/full/max/0/default.pdf", 501),
        ("/iiif/3/no-such-image/info.json", 404),
        ("/iiif/3/no-such-image/full/max/0/default.jpg", 404),
        ("/iiif/3/..%2F..%2Fetc%2Fpasswd/info.json", 400),
        ("/iiif/3/corrupt-truncated/full/100,/0/default.jpg", 500),
        ("/iiif/2/sample-photo/full/^100,/0/default.jpg", 400),
    ],
)
def test_errors_are_short_and_clear(http: httpx.Client, path: str, status: int) -> None:
    resp = http.get(path)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    assert 0 < len(resp.text) < 500
    assert resp.headers["access-control-allow-origin"] == "*"


def test_2x_allows_upscaling_without_caret(http: httpx.Client) -> None:
    resp = http.get("/iiif/2/sample-png/0,0,100,100/200,/0/default.png")
    assert resp.status_code == 200
    image = pyvips.Image.new_from_buffer(resp.content, "")
    assert (image.width, image.height) == (200, 200)


def test_max_area_bounds_max_size(image_root: Path, stack: Stack, tmp_path: Path) -> None:
    proc, port = start_gateway(
        stack.decoder_target, tmp_path, "gateway-small", {"IIIF_GATEWAY_MAX_AREA": "10000"}
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            info = client.get("/iiif/3/sample-photo/info.json").json()
            assert info["maxArea"] == 10000
            image = pyvips.Image.new_from_buffer(
                client.get("/iiif/3/sample-photo/full/max/0/default.png").content, ""
            )
            assert image.width * image.height <= 10000
            assert client.get("/iiif/3/sample-photo/full/200,/0/default.png").status_code == 400
    finally:
        processes.stop(proc)


def test_unreachable_decoder_gives_503_with_retry_after(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{processes.free_port()}"
    port = processes.free_port()
    proc = processes.start(
        "gateway",
        {
            "IIIF_GATEWAY_PORT": str(port),
            "IIIF_GATEWAY_DECODER_TARGET": dead,
            "IIIF_GATEWAY_REQUEST_TIMEOUT_S": "3",
        },
        tmp_path / "gateway-dead.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        processes.wait_until(
            lambda: httpx.get(f"{url}/health/live", timeout=1).status_code == 200,
            proc,
            30,
            "gateway",
        )
        assert httpx.get(f"{url}/health/ready", timeout=10).status_code == 503
        resp = httpx.get(f"{url}/iiif/3/sample-photo/info.json", timeout=10)
        assert resp.status_code in (503, 504)
        if resp.status_code == 503:
            assert int(resp.headers["retry-after"]) >= 1
    finally:
        processes.stop(proc)


def test_caret_max_upscales_to_max_area(stack: Stack, tmp_path: Path) -> None:
    """3.0 section 4.2: `^max` scales to the largest size maxArea permits."""
    proc, port = start_gateway(
        stack.decoder_target, tmp_path, "gateway-area", {"IIIF_GATEWAY_MAX_AREA": "1000000"}
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            resp = client.get("/iiif/3/sample-png/0,0,100,100/^max/0/default.png")
            image = pyvips.Image.new_from_buffer(resp.content, "")
            assert (image.width, image.height) == (1000, 1000)
            assert client.get("/iiif/3/sample-png/0,0,100,100/max/0/default.png").status_code == 200
    finally:
        processes.stop(proc)


def test_request_id_travels_to_the_decoder_logs(http: httpx.Client, stack: Stack) -> None:
    request_id = "trace-me-4711"
    resp = http.get(
        "/iiif/3/sample-photo/10,10,50,50/50,/0/default.jpg", headers={"X-Request-ID": request_id}
    )
    assert resp.headers["x-request-id"] == request_id
    deadline = time.monotonic() + 10
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline and not lines:
        text = (stack.logs / "decoder.log").read_text()
        lines = [
            json.loads(line)
            for line in text.splitlines()
            if line.startswith("{") and request_id in line
        ]
        time.sleep(0.05)
    assert {line["rpc"] for line in lines} >= {"Render"}, "one JSON line per call, same id"
    assert all(line["code"] == "OK" for line in lines)


def test_info_json_follows_a_changed_image_and_the_asking_host(
    stack: Stack, tmp_path: Path
) -> None:
    """The gateway keeps built info.json documents: never one of an old
    version of the image, nor one made for another host."""
    gateway, port = start_gateway(
        stack.decoder_target, tmp_path, "gateway-info", {"IIIF_GATEWAY_DESCRIBE_CACHE_TTL_S": "1"}
    )
    image = stack.image_root / "info-changes.png"
    pyvips.Image.black(300, 200).write_to_file(str(image))
    url = f"http://127.0.0.1:{port}/iiif/3/info-changes/info.json"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "images.example.org"}
    try:
        first = httpx.get(url, timeout=30).json()
        other_host = httpx.get(url, headers=forwarded, timeout=30).json()
        again = httpx.get(url, timeout=30).json()
        assert first == again
        assert other_host["id"] == "https://images.example.org/iiif/3/info-changes"
        assert first["id"] == f"http://127.0.0.1:{port}/iiif/3/info-changes"
        assert (first["width"], first["height"]) == (300, 200)

        pyvips.Image.black(400, 250).write_to_file(str(image))
        deadline = time.monotonic() + 10
        width = 300
        while time.monotonic() < deadline and width == 300:
            time.sleep(0.2)
            changed = httpx.get(url, timeout=30).json()
            width = changed["width"]
        assert (changed["width"], changed["height"]) == (400, 250)
    finally:
        processes.stop(gateway)
        image.unlink()


def test_render_cache_serves_repeats_and_never_stale(stack: Stack, tmp_path: Path) -> None:
    gateway, port = start_gateway(
        stack.decoder_target,
        tmp_path,
        "gateway-cache",
        {"IIIF_GATEWAY_RENDER_CACHE_MB": "16", "IIIF_GATEWAY_DESCRIBE_CACHE_TTL_S": "1"},
    )
    image = stack.image_root / "cache-me.png"
    source = pyvips.Image.black(300, 200).new_from_image([200, 10, 10]).cast("uchar")
    source.write_to_file(str(image))
    url = f"http://127.0.0.1:{port}/iiif/3/cache-me/full/60,/0/default.png"
    try:
        first = httpx.get(url, timeout=30)
        repeat = httpx.get(url, timeout=30)
        assert first.status_code == repeat.status_code == 200
        assert first.content == repeat.content
        red = pyvips.Image.new_from_buffer(repeat.content, "").getpoint(5, 5)
        # The image changes: once the description expires (1 s here) the new
        # version keys new renders; the old version's entry is never served again.
        source.new_from_image([10, 10, 200]).cast("uchar").write_to_file(str(image))
        deadline = time.monotonic() + 10
        blue = red
        while time.monotonic() < deadline and blue == red:
            changed = httpx.get(url, timeout=30)
            blue = pyvips.Image.new_from_buffer(changed.content, "").getpoint(5, 5)
            time.sleep(0.2)
        assert red[0] > 150
        assert blue[2] > 150, "a cached render of the old version must not be served"
    finally:
        processes.stop(gateway)
        image.unlink()
