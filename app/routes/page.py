"""GET /: the demo page (app/static/index.html), or a pointer to the API docs while there is none."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["page"])

_FALLBACK = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VRNN service</title></head>
<body><h1>VRNN service</h1><p>Speech and handwriting from Variational RNNs.
See the <a href="docs">API documentation</a> and the <a href="models">models</a>.</p></body></html>
"""


@router.get("/", summary="Demo page", response_class=HTMLResponse, include_in_schema=False)
async def index() -> Response:
    page = STATIC_DIR / "index.html"
    if page.is_file():
        return FileResponse(page, media_type="text/html")
    return HTMLResponse(_FALLBACK)
