"""`keyreid serve` over real HTTP: uvicorn on 127.0.0.1 (port 0) in a thread, a tiny trained kae
model and a faiss index over the tiny synthetic gallery. Every abuse case is a real request;
after each one /healthz answers and a normal search gives the same answer as before."""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from keyreid.serve.metrics import Histogram, Metrics
from keyreid.serve.pool import InferencePool, Overloaded
from keyreid.serve.uploads import UploadError, decode_upload, header_size, sniff_format
from tests.serve_helpers import build_index_for_tests, encode, image_bytes, make_app, noise_image, serving, Server

MAX_BODY = 256 * 1024
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def built(tiny_synth, tmp_path_factory):
    return build_index_for_tests(tmp_path_factory.mktemp("serve_index"), tiny_synth)


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    with serving(built, tmp_path_factory.mktemp("serve_api"), max_body_bytes=MAX_BODY, max_pixels=MAX_PIXELS,
                 admin_token="s3cret") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def query(built):
    return image_bytes(built["queries"][0])


@pytest.fixture(scope="module")
def baseline(client, query):
    r = client.post("/api/search?top_k=5", content=query)
    assert r.status_code == 200
    return r.json()["results"]


def assert_healthy(client, query, baseline):
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.post("/api/search?top_k=5", content=query)
    assert r.status_code == 200 and r.json()["results"] == baseline


# ---------------------------------------------------------------------------- pieces, no server
def _png_header_only(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def _jpeg_claiming(w: int, h: int) -> bytes:
    data = bytearray(encode(noise_image(16, 8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


@pytest.mark.parametrize("fmt,kw", [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}),
                                    ("WEBP", {}), ("WEBP", {"lossless": True})])
def test_header_size_agrees_with_pillow(fmt, kw):
    for w, h in [(1, 1), (37, 91), (300, 17), (1024, 768)]:
        data = encode(noise_image(w, h, seed=w), fmt, **kw)
        assert sniff_format(data) == fmt
        assert header_size(data, fmt) == Image.open(io.BytesIO(data)).size == (w, h)


def test_header_size_of_animated_webp_is_the_canvas():
    frames = [noise_image(40, 30, seed=s) for s in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = buf.getvalue()
    assert data[12:16] == b"VP8X" and header_size(data, "WEBP") == (40, 30)


def test_bombs_are_refused_from_the_header_alone():
    for data in (_png_header_only(60_000, 60_000), _jpeg_claiming(30_000, 30_000)):
        with pytest.raises(UploadError) as e:
            decode_upload(data, max_pixels=MAX_PIXELS)
        assert e.value.status == 413 and e.value.reason == "pixel_limit"
    # the same few bytes with a small claim are simply a truncated file
    with pytest.raises(UploadError) as e:
        decode_upload(_png_header_only(10, 10), max_pixels=MAX_PIXELS)
    assert e.value.status == 400


def test_histogram_and_counter_text_format():
    h = Histogram("t_seconds", "test.", ("route",), buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v, "/a")
    text = "\n".join(h.render())
    # le is inclusive and buckets are cumulative: 0.05 and 0.1 <= 0.1; 0.5 <= 1; 3.0 only in +Inf
    assert 't_seconds_bucket{route="/a",le="0.1"} 2' in text
    assert 't_seconds_bucket{route="/a",le="1"} 3' in text
    assert 't_seconds_bucket{route="/a",le="+Inf"} 4' in text
    assert 't_seconds_count{route="/a"} 4' in text and 't_seconds_sum{route="/a"} 3.65' in text
    m = Metrics()
    m.rejections.inc("too_large")
    m.rejections.inc("too_large")
    assert 'keyreid_rejections_total{reason="too_large"} 2' in m.render()


def test_pool_batches_waiting_queries_and_refuses_beyond_its_queue():
    import asyncio

    gate = threading.Event()
    sizes = []

    def run(batch):
        gate.wait(10)
        sizes.append(len(batch))
        return [x * 2 for x in batch]

    pool = InferencePool(run, workers=1, queue_size=3, max_batch=8)

    async def main():
        first = asyncio.ensure_future(pool.submit(0))   # taken by the worker, which then blocks
        await asyncio.sleep(0.2)
        waiting = [asyncio.ensure_future(pool.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as e:
            await pool.submit(4)
        assert e.value.retry_after >= 1
        gate.set()
        return await first, await asyncio.gather(*waiting)

    first, rest = asyncio.run(main())
    pool.close()
    assert first == 0 and rest == [2, 4, 6]
    assert sizes == [1, 3]  # the three waiting queries ran as one batch


def test_embedding_does_not_depend_on_the_batch(built):
    """A query alone (padded to two rows) and the same query among others embed bit for bit the
    same, and the single-forward embedding equals LoadedModel.embed_tensor's."""
    from keyreid.inference import load_model
    from keyreid.search import open_index
    from keyreid.serve.service import SearchService, out_embedding

    model = load_model(built["checkpoint"], device="cpu")
    service = SearchService(model, open_index(built["index"]), uploads_dir=Path("/nonexistent"))
    ims = [Image.open(p).convert("RGB") for p in built["queries"][:5]]
    alone = np.concatenate([service.embed_batch([im])[0] for im in ims])
    together, kps = service.embed_batch(ims)
    assert np.array_equal(alone, together)
    batch = model.preprocess(ims)
    assert np.array_equal(out_embedding(model, model.forward(batch), batch, False), model.embed_tensor(batch))
    # keypoints: sub-pixel peaks of the predicted heatmaps, in each query's own pixels, within
    # half a map cell of the grid's argmax
    from keyreid.viz.heatmaps import heatmap_argmax_xy, heatmap_peaks_xy

    maps = model.forward(batch).heatmaps.numpy()
    assert np.allclose(kps, np.stack([heatmap_peaks_xy(m, (im.height, im.width)) for m, im in zip(maps, ims)]))
    grid = np.stack([heatmap_argmax_xy(m, (im.height, im.width)) for m, im in zip(maps, ims)])
    cell = np.array([ims[0].width / maps.shape[-1], ims[0].height / maps.shape[-2]])
    assert (np.abs(kps[..., :2] - grid[..., :2]) <= cell / 2 + 1e-9).all()
    service.close()


# ---------------------------------------------------------------------------- the API
def test_search_equals_the_index_answer_for_the_model_embedding(built, client, query, baseline):
    from keyreid.inference import load_model
    from keyreid.search import open_index

    model = load_model(built["checkpoint"], device="cpu")
    index = open_index(built["index"])
    expected = index.search(model.embed(Image.open(io.BytesIO(query))), 5)[0]
    index.close()
    assert [h["id"] for h in baseline] == [h.id for h in expected]
    assert [h["score"] for h in baseline] == pytest.approx([h.score for h in expected], abs=1e-5)
    assert baseline == sorted(baseline, key=lambda h: -h["score"])
    assert [h["rank"] for h in baseline] == [1, 2, 3, 4, 5]
    assert all(h["thumbnail"] == f"/api/gallery/{h['id']}/thumbnail" for h in baseline)
    # multipart with the options as form fields gives the same answer
    r = client.post("/api/search", files={"image": ("q.png", query, "image/png")}, data={"top_k": "5"})
    assert r.status_code == 200 and r.json()["results"] == baseline
    body = r.json()
    assert body["took_ms"]["total"] > 0 and body["query"] == {"width": 64, "height": 128, "format": "PNG",
                                                               "frames": 1}
    kp = body["keypoints"]
    assert kp["name"] == "coco17" and len(kp["points"]) == 17
    assert all(-0.5 <= x <= 63.5 and -0.5 <= y <= 127.5 for x, y, _ in kp["points"])


def test_filters_and_rerank(client, query):
    all_hits = client.post("/api/search?top_k=100", content=query).json()["results"]
    cams = sorted({h["camera"] for h in all_hits})
    keep = cams[0]
    only = client.post(f"/api/search?top_k=100&cameras={keep}", content=query).json()["results"]
    assert only == [dict(h, rank=i) for i, h in enumerate((h for h in all_hits if h["camera"] == keep), 1)]
    drop = client.post(f"/api/search?top_k=100&exclude_cameras={keep}", content=query).json()["results"]
    assert {h["id"] for h in drop} == {h["id"] for h in all_hits if h["camera"] != keep}
    # the synthetic gallery has no timestamps: an unknown time is outside every time window
    assert client.post("/api/search?after=0", content=query).json()["results"] == []
    rr = client.post("/api/search?top_k=5&rerank=true", content=query).json()["results"]
    assert len(rr) == 5 and all("rerank_distance" in h for h in rr)
    assert [h["rerank_distance"] for h in rr] == sorted(h["rerank_distance"] for h in rr)


@pytest.mark.parametrize("params,field", [
    ("top_k=0", "top_k"), ("top_k=101", "top_k"), ("top_k=abc", "top_k"), ("cameras=a,b", "cameras"),
    ("exclude_cameras=-1", "exclude_cameras"), ("after=soon", "after"), ("after=10&before=5", "before"),
    ("rerank=maybe", "rerank"), ("topk=5", "topk"),
])
def test_bad_options_are_422_with_the_field_named(client, query, baseline, params, field):
    r = client.post(f"/api/search?{params}", content=query)
    assert r.status_code == 422
    body = r.json()
    assert body["field"] == field and body["error"].startswith(field) and body["reason"] == "invalid_option"
    assert_healthy(client, query, baseline)


def _chunks(data: bytes, size: int = 16 * 1024):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _truncated(fmt: str) -> bytes:
    data = encode(noise_image(64, 128, seed=3), fmt)
    return data[:len(data) // 2]


ABUSE = {
    "declared too large": (lambda q: {"content": b"\xff\xd8\xff" + b"0" * (MAX_BODY + 10)}, 413, "too_large"),
    "chunked too large": (lambda q: {"content": _chunks(b"\x89PNG\r\n\x1a\n" + os.urandom(MAX_BODY + 50_000))},
                          413, "too_large"),
    "far too large": (lambda q: {"content": b"0" * (MAX_BODY * 8)}, 413, "too_large"),
    "text": (lambda q: {"content": b"hello, this is not an image"}, 415, "unsupported_type"),
    "gif": (lambda q: {"content": encode(noise_image(8, 8), "GIF")}, 415, "unsupported_type"),
    "bmp named png": (lambda q: {"files": {"image": ("x.png", encode(noise_image(8, 8), "BMP"), "image/png")}},
                      415, "unsupported_type"),
    "empty": (lambda q: {"content": b""}, 400, "bad_image"),
    "truncated png": (lambda q: {"content": _truncated("PNG")}, 400, "bad_image"),
    "truncated jpeg": (lambda q: {"content": _truncated("JPEG")}, 400, "bad_image"),
    "corrupt png": (lambda q: {"content": b"\x89PNG\r\n\x1a\n" + os.urandom(3000)}, 400, "bad_image"),
    "png bomb 60000x60000": (lambda q: {"content": _png_header_only(60_000, 60_000)}, 413, "pixel_limit"),
    "jpeg over the pixel limit": (lambda q: {"content": _jpeg_claiming(3000, 2000)}, 413, "pixel_limit"),
    "no image field": (lambda q: {"data": {"top_k": "3"}, "files": {"other": ("a.txt", b"x")}}, 422, "invalid_option"),
}


@pytest.mark.parametrize("case", list(ABUSE))
def test_abuse_is_refused_and_the_service_keeps_serving(client, query, baseline, case):
    make, status, reason = ABUSE[case]
    r = client.post("/api/search", **make(query))
    assert r.status_code == status, r.text
    assert r.json()["reason"] == reason and "\n" not in r.json()["error"]
    assert_healthy(client, query, baseline)


def test_only_the_first_frame_of_an_animated_image_is_used(client, query, built, baseline):
    first = Image.open(io.BytesIO(query)).convert("RGB")
    other = noise_image(first.width, first.height, seed=9)
    for fmt in ("PNG", "WEBP"):
        buf = io.BytesIO()
        first.save(buf, fmt, save_all=True, append_images=[other], **({"lossless": True} if fmt == "WEBP" else {}))
        r = client.post("/api/search?top_k=5", content=buf.getvalue())
        assert r.status_code == 200 and r.json()["query"]["frames"] == 2
        assert r.json()["results"] == baseline
    jpeg = client.post("/api/search?top_k=5", content=encode(first, "JPEG", quality=95))
    assert jpeg.status_code == 200 and len(jpeg.json()["results"]) == 5


def test_thumbnails_by_id_only(client, built, query, baseline):
    r = client.get("/api/gallery/0/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == Image.open(built["gallery"][0]).size
    png = client.get("/api/gallery/0/image")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB")),
                          np.asarray(Image.open(built["gallery"][0]).convert("RGB")))
    for path in ["/api/gallery/../../../../etc/passwd/thumbnail", "/api/gallery/..%2F..%2Fetc%2Fpasswd/thumbnail",
                 "/api/gallery/%2e%2e/thumbnail", "/api/gallery/-1/thumbnail", "/api/gallery/99999/thumbnail",
                 "/api/gallery/0x1/thumbnail", f"/api/gallery/{built['gallery'][0]}/thumbnail",
                 "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"]:
        r = client.get(path)
        assert r.status_code in (404, 422), path
        assert b"root:" not in r.content and r.headers["content-type"] == "application/json", path
    assert_healthy(client, query, baseline)


def test_admin_routes_need_the_token_and_change_the_index_atomically(client, server, built, query, baseline):
    from keyreid.search import open_index

    new = encode(noise_image(64, 128, seed=42), "PNG")
    assert client.post("/api/gallery", content=new).status_code == 401
    assert client.post("/api/gallery", content=new, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    before = len(open_index(built["index"]))
    r = client.post("/api/gallery", files={"image": ("n.png", new)}, data={"camid": "2", "pid": "77"}, headers=auth)
    assert r.status_code == 200, r.text
    new_id = r.json()["id"]
    on_disk = open_index(built["index"])  # what another process would open now
    assert len(on_disk) == before + 1 and on_disk.get_metadata([new_id])[0]["pid"] == 77
    on_disk.close()
    hit = client.post("/api/search?top_k=1", content=new).json()["results"][0]
    assert hit["id"] == new_id and hit["camera"] == 2 and hit["score"] == pytest.approx(1.0, abs=1e-4)
    assert client.get(f"/api/gallery/{new_id}/thumbnail").status_code == 200
    stored = Path(server.app.service.metadata(new_id)["path"])
    assert stored.parent == server.app.service.uploads_dir.resolve() and stored.is_file()

    assert client.delete(f"/api/gallery/{new_id}").status_code == 401
    r = client.delete(f"/api/gallery/{new_id}", headers=auth)
    assert r.status_code == 200 and r.json()["deleted_file"] is True and not stored.exists()
    assert client.delete(f"/api/gallery/{new_id}", headers=auth).status_code == 404
    assert client.get(f"/api/gallery/{new_id}/thumbnail").status_code == 404
    assert new_id not in [h["id"] for h in client.post("/api/search?top_k=100", content=new).json()["results"]]
    assert len(open_index(built["index"])) == before
    assert client.post("/api/gallery", content=b"not an image", headers=auth).status_code == 415
    assert client.post("/api/gallery?camid=x", content=new, headers=auth).json()["field"] == "camid"
    assert len(open_index(built["index"])) == before
    assert_healthy(client, query, baseline)


def test_admin_routes_are_off_without_a_token(built, tmp_path, query):
    with serving(built, tmp_path) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        r = c.post("/api/gallery", content=query, headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "--admin-token" in r.json()["error"]
        assert c.delete("/api/gallery/0").status_code == 403
        assert c.get("/api/info").json()["admin"] is False


def test_metrics_count_requests_and_rejections(built, tmp_path, query):
    with serving(built, tmp_path, max_body_bytes=MAX_BODY) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        for _ in range(2):
            assert c.post("/api/search", content=query).status_code == 200
        assert c.post("/api/search", content=b"GIF89a....").status_code == 415
        assert c.post("/api/search", content=b"0" * (MAX_BODY + 1)).status_code == 413
        assert c.post("/api/search?top_k=0", content=query).status_code == 422
        text = c.get("/metrics").text
    assert 'keyreid_http_requests_total{route="/api/search",method="POST",status="200"} 2' in text
    assert 'keyreid_http_requests_total{route="/api/search",method="POST",status="415"} 1' in text
    assert 'keyreid_http_requests_total{route="other",method="POST",status="413"} 1' in text
    for reason in ("unsupported_type", "too_large", "invalid_option"):
        assert f'keyreid_rejections_total{{reason="{reason}"}} 1' in text
    assert 'keyreid_http_request_duration_seconds_count{route="/api/search"} 4' in text
    assert re.search(r"keyreid_inference_batch_size_count 2\b", text)
    assert "keyreid_index_size 30" in text


def test_info_and_health(client, built):
    info = client.get("/api/info").json()
    from keyreid.inference import load_model

    assert info["model"]["fingerprint"] == load_model(built["checkpoint"], device="cpu").fingerprint
    assert info["index"]["backend"] == "faiss" and info["index"]["size"] >= 30
    assert info["model"]["keypoints"] is True and info["admin"] is True
    assert client.get("/healthz").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_16_concurrent_clients_get_the_serial_answers(client, built, query, baseline):
    images = [image_bytes(p) for p in built["queries"][:4]]
    serial = [client.post("/api/search?top_k=10", content=im).json()["results"] for im in images]

    def worker(k):
        out = []
        with httpx.Client(base_url=str(client.base_url), timeout=120) as c:
            for j in range(4):
                i = (k + j) % len(images)
                r = c.post("/api/search?top_k=10", content=images[i])
                out.append((i, r.status_code, r.json()["results"] if r.status_code == 200 else r.text))
        return out

    with ThreadPoolExecutor(16) as ex:
        answers = [a for part in ex.map(worker, range(16)) for a in part]
    assert len(answers) == 64
    assert [status for _, status, _ in answers] == [200] * 64
    for i, _, results in answers:
        assert results == serial[i]
    assert_healthy(client, query, baseline)


def test_overload_gives_503_with_retry_after_not_timeouts(built, tmp_path, query):
    app = make_app(built, tmp_path, workers=1, queue=2, max_batch=1)
    app.pool.before_batch = lambda n: time.sleep(0.4)  # a slow model
    with Server(app) as s:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            expected = c.post("/api/search?top_k=5", content=query).json()["results"]

        def one(_):
            with httpx.Client(base_url=s.url, timeout=60) as c:
                r = c.post("/api/search?top_k=5", content=query)
                return r.status_code, r.headers.get("retry-after"), r.json()

        with ThreadPoolExecutor(12) as ex:
            answers = list(ex.map(one, range(12)))
        codes = [a[0] for a in answers]
        assert set(codes) <= {200, 503} and codes.count(503) >= 6 and codes.count(200) >= 1
        for code, retry, body in answers:
            if code == 503:
                assert int(retry) >= 1 and body["reason"] == "overloaded"
            else:
                assert body["results"] == expected
        with httpx.Client(base_url=s.url, timeout=60) as c:
            assert c.get("/healthz").status_code == 200
            assert c.post("/api/search?top_k=5", content=query).json()["results"] == expected
            assert 'keyreid_rejections_total{reason="overloaded"}' in c.get("/metrics").text


# ---------------------------------------------------------------------------- the command
KEYREID = str(Path(sys.executable).with_name("keyreid"))


def _main(monkeypatch, capsys, args) -> tuple[int, str]:
    """keyreid.cli.main() as the `keyreid` command runs it: exit code and stderr."""
    from keyreid.cli import main

    monkeypatch.setattr(sys, "argv", ["keyreid", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def test_cli_refuses_bad_arguments_in_one_line(tmp_path, built, monkeypatch, capsys):
    index_files = sorted(p.name for p in Path(built["index"]).iterdir())
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    cases = [
        ([], "give --index INDEX and --checkpoint CKPT"),
        (["--index", str(tmp_path / "nope"), "--checkpoint", str(built["checkpoint"])], "nope"),
        (["--index", str(built["index"]), "--checkpoint", str(tmp_path / "x.pt")], "x.pt: checkpoint file not found"),
        (["--index", str(built["index"]), "--checkpoint", str(built["checkpoint"]), "--port", str(port)],
         f"--port {port}: cannot listen there"),
        (["--demo", "--checkpoint", str(tmp_path / "none.pt")], "none.pt: demo model not found"),
    ]
    try:
        for args, message in cases:
            code, err = _main(monkeypatch, capsys, ["serve", *args])
            lines = [l for l in err.splitlines() if l.strip()]
            assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    finally:
        busy.close()
    assert sorted(p.name for p in Path(built["index"]).iterdir()) == index_files


def test_cli_serves_on_a_free_port(built, tmp_path, query):
    args = [KEYREID, "serve", "--index", str(built["index"]), "--checkpoint", str(built["checkpoint"]),
            "--port", "0", "--uploads", str(tmp_path / "up")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stdout:
            m = re.search(r"serving on (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, proc.stderr.read() if proc.poll() is not None else "no 'serving on' line"
        with httpx.Client(base_url=url, timeout=60) as c:
            for _ in range(200):
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            assert len(c.post("/api/search?top_k=3", content=query).json()["results"]) == 3
    finally:
        proc.terminate()
        proc.wait(30)


def test_demo_index_is_built_once_from_the_checkpoint(built, tiny_synth, tmp_path):
    from keyreid.search import open_index
    from keyreid.serve.demo import prepare_demo_index

    index = prepare_demo_index(built["checkpoint"], tiny_synth, tmp_path / "serve", show_progress=False)
    opened = open_index(index)
    assert len(opened) == len(built["gallery"]) and index.parent.name == opened.manifest["fingerprint"]
    opened.close()
    stamp = (index / "manifest.json").stat().st_mtime_ns
    assert prepare_demo_index(built["checkpoint"], tiny_synth, tmp_path / "serve", show_progress=False) == index
    assert (index / "manifest.json").stat().st_mtime_ns == stamp


def test_explain_returns_the_similarity_cam_of_query_and_match(client, built, query, baseline):
    from keyreid.inference import load_model
    from keyreid.viz.gradcam import panel_scale, picture_size, similarity_cam

    match_id = baseline[0]["id"]
    r = client.post(f"/api/explain?gallery_id={match_id}", content=query)
    assert r.status_code == 200, r.text
    body = r.json()
    model = load_model(built["checkpoint"], device="cpu")
    batch = model.preprocess([Image.open(io.BytesIO(query)), Image.open(built["gallery"][match_id])])
    reference = similarity_cam(model.model, batch[0], batch[1])
    assert body["score"] == pytest.approx(reference.similarity, abs=1e-5)
    assert body["score"] == pytest.approx(baseline[0]["score"], abs=1e-4)  # the cosine the search reported
    import base64

    picture = Image.open(io.BytesIO(base64.b64decode(body["picture"].split(",", 1)[1])))
    h, w = model.input_size
    assert picture.format == "PNG" and picture.size[::-1] == picture_size((h, w), 6, panel_scale(h))
    assert client.post("/api/explain?gallery_id=99999", content=query).status_code == 404
    r = client.post("/api/explain", content=query)
    assert r.status_code == 422 and r.json()["field"] == "gallery_id"
    assert client.post(f"/api/explain?gallery_id={match_id}", content=b"text").status_code == 415
    assert_healthy(client, query, baseline)


def test_an_onnx_export_serves_the_same_ranking(built, tmp_path, query, baseline):
    from keyreid.export.onnx import export_onnx
    from keyreid.inference import load_model
    from keyreid.search import open_index
    from keyreid.serve import SearchService, create_app

    onnx = tmp_path / "model.onnx"
    export_onnx(built["checkpoint"], onnx, log=lambda s: None)
    service = SearchService(load_model(onnx), open_index(built["index"]), uploads_dir=tmp_path / "up")
    with Server(create_app(service)) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        body = c.post("/api/search?top_k=5", content=query).json()
        assert [h["id"] for h in body["results"]] == [h["id"] for h in baseline]
        assert [h["score"] for h in body["results"]] == pytest.approx([h["score"] for h in baseline], abs=1e-4)
        assert body["keypoints"] is None and c.get("/api/info").json()["model"]["keypoints"] is False
        r = c.post(f"/api/explain?gallery_id={baseline[0]['id']}", content=query)
        assert r.status_code == 501 and "ONNX" in r.json()["error"]


def test_other_host_names_are_refused_against_dns_rebinding(client, server, built, tmp_path, query, baseline):
    # a page on evil.example whose DNS name now points at 127.0.0.1 still sends its own Host
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example", "[::2]"):
        r = client.get("/api/info", headers={"Host": host})
        assert r.status_code == 400 and r.json()["reason"] == "host" and r.json()["field"] == "host", (host, r.text)
        r = client.post("/api/search?top_k=5", content=query, headers={"Host": host})
        assert r.status_code == 400
    for host in (f"localhost:{server.port}", f"LOCALHOST:{server.port}", "127.0.0.1", f"[::1]:{server.port}"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    assert_healthy(client, query, baseline)
    with serving(built, tmp_path, allowed_hosts=("reid.lab.example",)) as named, \
            httpx.Client(base_url=named.url, timeout=60) as c:
        assert c.get("/healthz", headers={"Host": "reid.lab.example:8000"}).status_code == 200
        assert c.get("/healthz").status_code == 400           # 127.0.0.1 is not among the names given
    with serving(built, tmp_path, allowed_hosts=("*",)) as anyhost, httpx.Client(base_url=anyhost.url) as c:
        assert c.get("/healthz", headers={"Host": "evil.example"}).status_code == 200


def test_default_allowed_hosts_follow_the_bound_address():
    from keyreid.serve.limits import default_allowed_hosts, host_name

    assert set(default_allowed_hosts("127.0.0.1")) == {"localhost", "127.0.0.1", "::1"}
    assert "localhost" in default_allowed_hosts("0.0.0.0") and socket.gethostname().lower() in \
        default_allowed_hosts("0.0.0.0")
    assert default_allowed_hosts("10.1.2.3") == ("10.1.2.3",)
    assert [host_name(h) for h in ("a.b:80", "[::1]:8000", "::1", "A.B")] == ["a.b", "::1", "::1", "a.b"]


def test_cli_refuses_a_malformed_allowed_hosts(tmp_path, built, monkeypatch, capsys):
    for bad in ("", " , ", "http://x/", "a b"):
        code, err = _main(monkeypatch, capsys, ["serve", "--index", str(built["index"]), "--checkpoint",
                                                str(built["checkpoint"]), "--allowed-hosts", bad])
        lines = [l for l in err.splitlines() if l.strip()]
        assert code == 2 and len(lines) == 1 and "--allowed-hosts" in lines[0], err


def test_keep_alive_round_trips_do_not_wait_for_nagle(built, tmp_path):
    """The CLI's listening socket is made so that accepted connections get TCP_NODELAY: on a
    reused keep-alive connection a small response took ~44 ms (the body waited for the client's
    delayed ACK under Nagle's algorithm), 0.3 ms without it. The median of 30 round trips on one
    connection must stay far below the 40 ms of a delayed ACK."""
    args = [KEYREID, "serve", "--index", str(built["index"]), "--checkpoint", str(built["checkpoint"]),
            "--port", "0", "--uploads", str(tmp_path / "up")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = next((m.group(1) for line in proc.stdout if (m := re.search(r"serving on (http://\S+)", line))), None)
        assert url, proc.stderr.read()
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(200):
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            times = []
            for _ in range(30):
                t = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                times.append(time.perf_counter() - t)
        assert sorted(times)[len(times) // 2] < 0.02, [round(1000 * t, 1) for t in times]
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_demo_is_found_from_any_folder(tmp_path, monkeypatch):
    """`keyreid serve --demo` outside the project root finds `make demo`'s files in the keyreid
    checkout; the current folder wins when it has its own."""
    from keyreid.serve import demo

    assert demo.PROJECT_ROOT == Path(__file__).resolve().parents[1]   # this checkout (editable install)
    checkout = tmp_path / "checkout"
    (checkout / demo.DEMO_CHECKPOINT).parent.mkdir(parents=True)
    (checkout / demo.DEMO_CHECKPOINT).write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(demo, "PROJECT_ROOT", checkout)
    monkeypatch.chdir(elsewhere)
    assert demo.demo_home() == checkout
    (elsewhere / demo.DEMO_CHECKPOINT).parent.mkdir(parents=True)
    (elsewhere / demo.DEMO_CHECKPOINT).write_bytes(b"y")
    assert demo.demo_home() == elsewhere
