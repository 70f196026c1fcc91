"""The Segments page: a few static files served from services/query/ui/ under /ui.

Only this router knows the page exists; the API knows nothing about it. The page talks to the
API from the browser with the same bearer key as any other client (kept in sessionStorage,
never in a URL). A strict Content-Security-Policy makes "nothing fetched from the internet"
hold in the browser, not only in our intentions.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

UI_DIR = Path(__file__).parent / "ui"

_JS = "text/javascript; charset=utf-8"
_ASSETS = {"app.js": _JS, "api.js": _JS, "chart.js": _JS, "triggers.js": _JS, "dom.js": _JS, "style.css": "text/css; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files, changed with each release: revalidate instead of serving a stale page.
    "Cache-Control": "no-cache",
}

ui_router = APIRouter(include_in_schema=False)


@ui_router.get("/ui")
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@ui_router.get("/ui/")
async def ui_index() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)


@ui_router.get("/ui/{name}")
async def ui_asset(name: str):
    if name not in _ASSETS:  # a fixed list: no path is ever built from user input
        if name == "index.html":
            return RedirectResponse("/ui/", status_code=307)
        return JSONResponse({"error": "not_found", "message": "no such file on the Segments page"}, status_code=404)
    return FileResponse(UI_DIR / name, media_type=_ASSETS[name], headers=_HEADERS)
