"""`landmarks serve`: the predictor behind HTTP (FastAPI on uvicorn), with a page to try it.

    GET  /        a page: choose or drop photos, see each one's tag and its top-5 landmarks
    GET  /health  {"status": "ok", "classes": N, "threshold": t}
    POST /tag     multipart fields named `files` -> one `landmarks tag --json` object per file, in order

What a request goes through, so that the event loop only parses, routes and waits:
- the body is counted as it arrives and refused with 413 the moment it passes --max-body-mb (FastAPI's
  max_body_size: a Content-Length over it is refused before any body is read, a chunked body at the read
  that crosses it; uvicorn then discards the rest), and starlette spools uploads over 1 MB to disk;
- each file's header gives the pixels it will decode to, and the request is admitted only while the
  images and pixels waiting stay within budget, else 503 with Retry-After (service.Admission);
- photos are decoded in a small thread pool by answers.read_image: decode_image's guarantees (truncated,
  empty, non-image and bomb files are per-file errors) and the CLI's shape check;
- one inference thread batches images across requests (service.BatchWorker);
- each result becomes the row `landmarks tag --json` prints (answers.row_of): one definition of the object.
"""
from __future__ import annotations

import asyncio
import functools
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any, AsyncIterator, BinaryIO

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile  # what request.form() returns (fastapi's is a subclass)
from starlette.requests import ClientDisconnect

from landmarks.batching import Result
from landmarks.answers import read_image, row_of
from landmarks.predictor_file import LoadedPredictor
from landmarks.service import Admission, BatchWorker, ServeOptions

RETRY_AFTER_S = 1  # a full queue drains in well under a second at the measured throughput
PAGE = "static/index.html"  # package data, beside this module


def decoded_pixels(file: BinaryIO, max_pixels: int) -> int:
    """The most pixels this upload decodes to, from its header alone, for admission before decoding.

    0 for what decode_image refuses before allocating anything (not an image, over max_pixels)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as img:  # reads the header; the file stays open (Pillow did not open it)
                width, height = img.size
    except Exception:  # whatever Pillow raises, decode_image will report it as the file's error
        return 0
    finally:
        file.seek(0)
    return width * height if width * height <= max_pixels else 0


def page_html() -> str:
    return files("landmarks").joinpath(PAGE).read_text(encoding="utf-8")


def create_app(predictor: LoadedPredictor, options: ServeOptions = ServeOptions()) -> FastAPI:
    """The app. `predictor` is a LoadedPredictor or anything with its interface (tests count its calls)."""
    worker = BatchWorker(predictor, max_batch=options.max_batch, max_wait_ms=options.max_wait_ms)
    admission = Admission(options.max_queue, options.pixel_budget)
    decoder = ThreadPoolExecutor(options.decode_threads, thread_name_prefix="decode")
    decode = functools.partial(read_image, resize_size=int(predictor.preprocess["resize_size"]),
                               max_pixels=options.max_pixels)
    page = page_html()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            worker.stop()
            decoder.shutdown(wait=True)

    # No /docs or /redoc: those pages load their scripts from a CDN.
    app = FastAPI(title="landmarks", lifespan=lifespan, docs_url=None, redoc_url=None,
                  max_body_size=options.max_body_bytes)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "classes": len(predictor.classes), "threshold": predictor.threshold}

    async def tag_one(upload: UploadFile) -> dict[str, Any]:
        name = upload.filename or ""
        image = await asyncio.get_running_loop().run_in_executor(decoder, decode, await upload.read())
        if isinstance(image, Exception):
            result = Result(name, None, None, image)
        else:
            result = await asyncio.wrap_future(worker.submit(name, image))
        return row_of(result, predictor)

    @app.post("/tag")
    async def tag(request: Request) -> Response:
        try:
            form = await request.form(max_files=options.max_queue, max_fields=options.max_queue)
        except ClientDisconnect:  # the client left mid-upload: nobody to answer, nothing worth a traceback
            return Response(status_code=400)
        try:
            uploads = form.getlist("files")
            if not uploads:
                raise HTTPException(400, "no files: send the photos as multipart/form-data fields named 'files'")
            if not all(isinstance(u, UploadFile) for u in uploads):
                raise HTTPException(400, "every 'files' field must be a file upload (curl -F files=@photo.jpg)")
            sizes = await asyncio.get_running_loop().run_in_executor(
                None, lambda: [decoded_pixels(u.file, options.max_pixels) for u in uploads])
            pixels = sum(sizes)
            if pixels > admission.max_pixels:
                raise HTTPException(413, f"these photos decode to {pixels} pixels, over the {admission.max_pixels} "
                                         "the service holds at once: send fewer per request")
            if not admission.admit(len(uploads), pixels):
                raise HTTPException(503, "busy: too many photos waiting; retry shortly",
                                    headers={"Retry-After": str(RETRY_AFTER_S)})
            try:
                rows = await asyncio.gather(*(tag_one(u) for u in uploads))
            finally:
                admission.release(len(uploads), pixels)
        finally:
            await form.close()
        return JSONResponse(rows)

    return app


def serve(predictor: LoadedPredictor, *, host: str, port: int, options: ServeOptions) -> int:
    """Run the service until interrupted (uvicorn logs `Uvicorn running on http://HOST:PORT`, the real
    port when `port` is 0). Returns the exit status."""
    uvicorn.run(create_app(predictor, options), host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    return 0
