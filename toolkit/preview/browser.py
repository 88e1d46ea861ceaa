"""The browser app path: the preview page in headless Chromium (driven by Playwright) classifies image files.

``drift`` holds a bundle to the gate through this path as well as through Python's, where it can run: the
page decodes with the browser's own decoder, resizes with ``resize.js`` and runs the model with LiteRT.js.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from toolkit.base.errors import ToolkitError
from toolkit.preview.server import LITERT_ENTRY, start

CHROMIUM_ENV = "TOOLKIT_CHROMIUM"  # a Chromium other than the one on PATH
READY_MS = 120_000  # loading LiteRT.js's wasm and compiling the model, on a slow machine
BATCH = 32  # images per round trip to the page

CLASSIFY = """async (files) => {
  const answers = [];
  for (const b64 of files) {
    try {
      const result = await window.preview.classify(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
      answers.push(result.probabilities);
    } catch (error) {
      answers.push(String(error.message || error));
    }
  }
  return answers;
}"""


def chromium() -> str | None:
    """The Chromium to run: ``$TOOLKIT_CHROMIUM``, else ``chromium`` on PATH."""
    return os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")


def unavailable() -> str | None:
    """Why the browser path cannot run here (said in the drift report), or None when it can."""
    if chromium() is None:
        return f"chromium not installed (apt-get install chromium, or set {CHROMIUM_ENV})"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed (pip install playwright)"
    if not LITERT_ENTRY.is_file():
        return "LiteRT.js not installed (make install runs npm ci)"
    return None


@contextmanager
def open_page(bundle: Path) -> Iterator:
    """The preview page of ``bundle``, loaded and ready, in a headless Chromium that is closed afterwards."""
    from playwright.sync_api import Error, sync_playwright

    server = start(bundle)
    try:
        with sync_playwright() as playwright:
            try:
                browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            except Error as error:
                raise ToolkitError(f"cannot start {chromium()}: {str(error).splitlines()[0]}") from None
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
                try:
                    page.wait_for_function("window.preview && window.preview.ready", timeout=READY_MS)
                except Error:
                    raise ToolkitError(f"the preview page of {bundle} did not load: {errors or 'timed out'}") from None
                yield page
            finally:
                browser.close()
    finally:
        server.shutdown()


def classify_files(page, paths: list[Path]) -> list:
    """The page's probabilities for each file, or the page's error message where it refused one."""
    encoded = [base64.b64encode(Path(path).read_bytes()).decode() for path in paths]
    return page.evaluate(CLASSIFY, encoded)


def browser_classify(bundle: Path, paths: list[str], desc: str = "browser app path") -> np.ndarray:
    """Probabilities for ``paths`` as the preview page computes them in Chromium, in order."""
    probs = []
    with open_page(bundle) as page, tqdm(total=len(paths), desc=desc, unit="img", leave=False, disable=None) as bar:
        for start_at in range(0, len(paths), BATCH):
            batch = paths[start_at : start_at + BATCH]
            for path, answer in zip(batch, classify_files(page, [Path(p) for p in batch]), strict=True):
                if isinstance(answer, str):
                    raise ToolkitError(f"the browser refused {path}: {answer}")
                probs.append(answer)
            bar.update(len(batch))
    return np.asarray(probs, np.float32)
