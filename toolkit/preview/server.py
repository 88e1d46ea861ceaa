"""A local HTTP server for the preview page, the contract's JavaScript, LiteRT.js and one checked bundle.

ES modules and WebAssembly need http, not ``file://``; only 127.0.0.1 is bound, and only the files the page
needs are served.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from typing import ClassVar

from toolkit.base.errors import ToolkitError

WEB = Path(__file__).resolve().parent / "web"
LITERT = WEB / "node_modules" / "@litertjs"
LITERT_ENTRY = LITERT / "core" / "dist" / "index.js"  # present once `npm ci` has run
RESIZE_JS = Path(__file__).resolve().parents[1] / "data" / "resize.js"
BUNDLE_FILES = ("manifest.json", "labels.txt", "model.tflite")
TYPES = {
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".tflite": "application/octet-stream",
}


def routes(bundle: Path) -> dict[str, Path]:
    """URL prefix -> folder or file. LiteRT.js must have been installed (``make`` runs ``npm ci``)."""
    if not LITERT_ENTRY.is_file():
        raise ToolkitError(f"LiteRT.js is not installed in {WEB}: run `make install` (npm ci there)")
    return {
        "/litert/": LITERT / "core",
        "/litert-utils/": LITERT / "wasm-utils" / "dist",
        "/resize.js": RESIZE_JS,
        **{f"/bundle/{name}": bundle / name for name in BUNDLE_FILES},
        "/": WEB / "static",
    }


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def __init__(self, *args, mapping: dict[str, Path], **kwargs):
        self.mapping = mapping
        super().__init__(*args, directory=str(WEB / "static"), **kwargs)

    def translate_path(self, path: str) -> str:
        """The file behind a URL, from the first matching prefix; anything else is not found."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path == "/":
            return str(WEB / "static" / "index.html")
        for prefix, target in self.mapping.items():
            if path == prefix and target.is_file():
                return str(target)
            if prefix.endswith("/") and path.startswith(prefix) and target.is_dir():
                found = (target / path[len(prefix) :]).resolve()
                return str(found) if found.is_relative_to(target.resolve()) else str(target / "missing")
        return str(WEB / "static" / "missing")

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # a re-exported bundle is what the page runs
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # the terminal shows the URL, not every request
        pass


def start(bundle: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """Serve in a background thread; the caller reads ``server.server_address`` and calls ``shutdown()``."""
    handler = functools.partial(_Handler, mapping=routes(bundle))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        raise ToolkitError(f"cannot listen on 127.0.0.1:{port}: {error.strerror}; pass another --port") from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
