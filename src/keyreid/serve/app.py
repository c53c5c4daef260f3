"""The FastAPI application of `keyreid serve`: routes, error answers and the middleware stack.

Every refusal is a JSON body {"error": one line, "reason": label[, "field": name]} with the
status that says why (400 corrupt image, 401/403 admin, 404 unknown id, 413 too large, 415 not
an image, 422 bad option, 503 busy or the index locked by another writer, 507 disk full); each
is counted in /metrics by reason."""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import logging
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Path as PathParam, Query as Query_, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from keyreid.errors import KeyreidError
from keyreid.search.index import INT64_MAX, INT64_MIN, parse_camera
from keyreid.serve.limits import LOOPBACK_NAMES, BodySizeLimit, HostCheck
from keyreid.serve.metrics import Metrics, MetricsMiddleware
from keyreid.serve.options import OptionError, parse_options
from keyreid.serve.pool import InferencePool, Overloaded
from keyreid.serve.service import Explain, NotFound, Query, SearchService, Unavailable
from keyreid.serve.uploads import UploadError, decode_upload
from keyreid.utils.io import DiskFullError, LockedError

STATIC = Path(__file__).parent / "static"
LOCKED_RETRY_S = 5
log = logging.getLogger("keyreid.serve")


@dataclass
class ServeSettings:
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000       # 6000 x 4000; decoded RGB is 75 MB
    workers: int = 1                   # inference threads; torch already uses every core per batch
    queue: int = 32                    # queries waiting for the pool before 503
    max_batch: int = 8
    decode_slots: int = 4              # images decoded at once (bounds decoding memory)
    admin_token: Optional[str] = None
    # Host header names answered (DNS-rebinding guard); "*" answers any. `keyreid serve` sets
    # the bound host's names; the default suits a loopback server.
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES


class AdminError(KeyreidError):
    def __init__(self, status: int, reason: str, message: str):
        self.status, self.reason = status, reason
        super().__init__(message)


class ServeApp:
    """The ASGI app uvicorn runs (metrics -> body cap -> FastAPI), with handles on its parts."""

    def __init__(self, api: FastAPI, service: SearchService, pool: InferencePool, metrics: Metrics,
                 settings: ServeSettings):
        self.api, self.service, self.pool, self.metrics, self.settings = api, service, pool, metrics, settings
        count = metrics.rejections.inc
        capped = BodySizeLimit(api, settings.max_body_bytes, on_reject=count)
        self._asgi = MetricsMiddleware(HostCheck(capped, settings.allowed_hosts, on_reject=count), metrics)

    async def __call__(self, scope, receive, send) -> None:
        await self._asgi(scope, receive, send)


def _error(status: int, reason: str, message: str, metrics: Metrics, **extra) -> JSONResponse:
    metrics.rejections.inc(reason)
    headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else None
    return JSONResponse({"error": message, "reason": reason, **extra}, status_code=status, headers=headers)


async def _read_upload(request: Request) -> tuple[bytes, dict[str, str]]:
    """The image bytes and the other form fields: multipart (the file in field "image") or the
    raw request body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=32)
        data, fields = None, {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "image":
                    raise OptionError(key, "unexpected file field; send the image in the field 'image'")
                data = await value.read()
            else:
                fields[key] = f"{fields[key]},{value}" if key in fields else value
        await form.close()
        if data is None:
            raise OptionError("image", "missing; send the image file in the multipart field 'image'")
        return data, fields
    return await request.body(), {}


def _query_values(request: Request) -> dict[str, str]:
    q = request.query_params
    return {k: ",".join(q.getlist(k)) for k in q.keys()}


def _meta_fields(fields: dict[str, str]) -> dict:
    meta: dict = {}
    # camid: the camera as the file names write it, 2 or c2 (README "Cameras")
    for key, cast in (("pid", int), ("camid", parse_camera), ("track", int), ("timestamp", float)):
        if key in fields and fields[key].strip():
            try:
                meta[key] = cast(fields[key])
            except ValueError:
                raise OptionError(key, f"must be a number, got {fields[key]!r}") from None
            if cast is not float and not INT64_MIN <= meta[key] <= INT64_MAX:
                raise OptionError(key, f"must fit in 64 bits ({INT64_MIN} to {INT64_MAX}), got {meta[key]}")
            if cast is float and not math.isfinite(meta[key]):
                raise OptionError(key, "must be a finite number")
    unknown = sorted(set(fields) - {"pid", "camid", "track", "timestamp"})
    if unknown:
        raise OptionError(unknown[0], "unknown field; known: pid, camid, track, timestamp")
    return meta


def create_app(service: SearchService, settings: Optional[ServeSettings] = None) -> ServeApp:
    settings = settings or ServeSettings()
    metrics = Metrics(queue_depth=lambda: pool.depth, index_size=lambda: len(service.index))

    def after_batch(n: int, seconds: float) -> None:
        metrics.batch_size.observe(n)
        metrics.inference.observe(seconds)

    pool = InferencePool(service.run_batch, workers=settings.workers, queue_size=settings.queue,
                         max_batch=settings.max_batch, after_batch=after_batch)
    decode_slots = asyncio.Semaphore(settings.decode_slots)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        await run_in_threadpool(pool.close)

    api = FastAPI(title="keyreid search", lifespan=lifespan, docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json")

    # ------------------------------------------------------------------ errors
    @api.exception_handler(KeyreidError)
    async def keyreid_error(_request: Request, e: KeyreidError):
        if isinstance(e, (UploadError, AdminError)):
            return _error(e.status, e.reason, str(e), metrics)
        if isinstance(e, OptionError):
            return _error(422, "invalid_option", str(e), metrics, field=e.field)
        if isinstance(e, NotFound):
            return _error(404, "not_found", str(e), metrics)
        if isinstance(e, Unavailable):
            return _error(501, "unavailable", str(e), metrics)
        if isinstance(e, LockedError):
            return _error(503, "index_locked", str(e), metrics, retry_after=LOCKED_RETRY_S)
        if isinstance(e, DiskFullError):
            return _error(507, "disk_full", str(e), metrics)
        log.error("request failed: %s", e)
        return _error(500, "internal", str(e), metrics)

    @api.exception_handler(Overloaded)
    async def overloaded(_request: Request, e: Overloaded):
        return _error(503, "overloaded", str(e), metrics, retry_after=e.retry_after)

    @api.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError):
        first = e.errors()[0]
        field = str(first["loc"][-1]) if first.get("loc") else "request"
        return _error(422, "invalid_option", f"{field}: {first.get('msg', 'invalid')}", metrics, field=field)

    @api.exception_handler(ClientDisconnect)
    async def gone(_request: Request, _e: ClientDisconnect):
        # the client hung up mid-upload: nobody reads this answer, but it is counted
        return _error(400, "client_disconnected", "the client closed the connection during the upload", metrics)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, e: StarletteHTTPException):
        reason = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "bad_request")
        return _error(e.status_code, reason, str(e.detail), metrics)

    # ------------------------------------------------------------------ helpers
    async def decode(data: bytes):
        async with decode_slots:
            return await run_in_threadpool(decode_upload, data, settings.max_pixels)

    def require_admin(request: Request) -> None:
        if not settings.admin_token:
            raise AdminError(403, "admin_off", "gallery changes are off: start the service with --admin-token "
                                               "or KEYREID_ADMIN_TOKEN")
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.admin_token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise AdminError(401, "unauthorized", "missing or wrong admin token (Authorization: Bearer TOKEN)")

    # ------------------------------------------------------------------ routes
    @api.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.get("/healthz")
    async def healthz():
        return {"status": "ok", "queue": pool.depth}

    @api.get("/api/info")
    async def info():
        out = await run_in_threadpool(service.info)
        out["limits"] = {"max_body_bytes": settings.max_body_bytes, "max_pixels": settings.max_pixels,
                         "max_top_k": service.max_top_k, "queue": settings.queue, "workers": settings.workers,
                         "max_batch": settings.max_batch, "formats": ["JPEG", "PNG", "WEBP"]}
        out["admin"] = bool(settings.admin_token)
        return out

    @api.get("/metrics", include_in_schema=False)
    async def metrics_text():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.post("/api/search")
    async def search(request: Request):
        start = time.perf_counter()
        data, fields = await _read_upload(request)
        values = _query_values(request)
        values.update(fields)
        opts = parse_options(values, service.max_top_k)
        decoded = await decode(data)
        decoded_at = time.perf_counter()
        result = await pool.submit(Query(decoded.image, opts))
        done = time.perf_counter()
        return {
            "results": [_hit_json(rank, hit, dist) for rank, (hit, dist) in enumerate(result.hits, 1)],
            "query": {"width": decoded.image.width, "height": decoded.image.height, "format": decoded.format,
                      "frames": decoded.frames},
            "keypoints": _keypoints_json(service, result.keypoints),
            "options": {"top_k": opts.top_k, "cameras": sorted(opts.cameras) if opts.cameras else None,
                        "exclude_cameras": sorted(opts.exclude_cameras) if opts.exclude_cameras else None,
                        "after": opts.after, "before": opts.before, "rerank": opts.rerank},
            "took_ms": {"total": round((done - start) * 1000, 2), "decode": round((decoded_at - start) * 1000, 2),
                        "inference": round((done - decoded_at) * 1000, 2)},
        }

    @api.post("/api/explain")
    async def explain(request: Request, gallery_id: int = Query_(ge=0, le=INT64_MAX)):
        """Similarity Grad-CAM of the uploaded query and gallery image `gallery_id`."""
        data, fields = await _read_upload(request)
        if fields:
            raise OptionError(sorted(fields)[0], "unknown field; explain takes the image and ?gallery_id=")
        decoded = await decode(data)
        await run_in_threadpool(service.metadata, gallery_id)  # 404 before any model work
        png, similarity = await pool.submit(Explain(decoded.image, gallery_id))
        return {"picture": "data:image/png;base64," + base64.b64encode(png).decode(), "score": round(similarity, 6),
                "gallery_id": gallery_id, "method": "gradxact",
                "note": "query, its similarity map, the match's map, the match"
                        + (", predicted keypoint heatmaps of both" if service.has_keypoints else "")}

    @api.get("/api/gallery")
    async def gallery(limit: int = 24):
        if not 1 <= limit <= 200:
            raise OptionError("limit", f"must lie between 1 and 200, got {limit}")
        items = await run_in_threadpool(service.sample_gallery, limit)
        return {"items": [dict(it, thumbnail=f"/api/gallery/{it['id']}/thumbnail",
                               image=f"/api/gallery/{it['id']}/image") for it in items],
                "size": len(service.index)}

    @api.get("/api/gallery/{gallery_id}/thumbnail")
    def thumbnail(gallery_id: int = PathParam(ge=0, le=INT64_MAX)):
        return Response(service.thumbnail(gallery_id), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=300"})

    @api.get("/api/gallery/{gallery_id}/image")
    def image(gallery_id: int = PathParam(ge=0, le=INT64_MAX)):
        buf = io.BytesIO()
        service.gallery_image(gallery_id).save(buf, "PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @api.post("/api/gallery")
    async def add_image(request: Request):
        require_admin(request)
        data, fields = await _read_upload(request)
        meta = _meta_fields({**_query_values(request), **fields})
        decoded = await decode(data)
        result = await pool.submit(Query(decoded.image, None))
        new_id = await run_in_threadpool(service.add, result.embedding, decoded.image, meta)
        return {"id": new_id, "size": len(service.index), "thumbnail": f"/api/gallery/{new_id}/thumbnail"}

    @api.delete("/api/gallery/{gallery_id}")
    async def remove_image(request: Request, gallery_id: int = PathParam(ge=0, le=INT64_MAX)):
        require_admin(request)
        out = await run_in_threadpool(service.remove, gallery_id)
        return {**out, "size": len(service.index)}

    return ServeApp(api, service, pool, metrics, settings)


def _hit_json(rank: int, hit, rerank_distance: Optional[float]) -> dict:
    # "camera": as the hit's file name writes it (README "Cameras"); the page shows it as c2
    out = {"rank": rank, "id": hit.id, "score": round(hit.score, 6), "camera": hit.camid, "pid": hit.pid,
           "timestamp": hit.timestamp, "track": hit.track, "thumbnail": f"/api/gallery/{hit.id}/thumbnail"}
    if rerank_distance is not None:
        out["rerank_distance"] = round(rerank_distance, 6)
    return out


def _keypoints_json(service: SearchService, keypoints) -> Optional[dict]:
    if keypoints is None:
        return None
    return {**service.skeleton_json(),
            "points": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)] for x, y, s in keypoints]}


__all__ = ["ServeApp", "ServeSettings", "create_app"]
