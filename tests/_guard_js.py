"""Helpers for the JavaScript runtimes of guarded files: onnxruntime-node (a subprocess) and
onnxruntime-web (a static page served from 127.0.0.1 to headless Chromium, which POSTs the release back)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "js"
NODE_MODULES = CLIENT / "node_modules"
#: Set by .ci/run: a missing runtime fails the tests instead of skipping them.
REQUIRED = os.environ.get("EDGEGUARD_REQUIRE_JS") == "1"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def need(condition: bool, why: str) -> None:
    if not condition:
        if REQUIRED:
            pytest.fail(f"{why} (EDGEGUARD_REQUIRE_JS=1: .ci/run installs it)")
        pytest.skip(why)


def node_available() -> None:
    need(shutil.which("node") is not None, "node is not installed")
    need((NODE_MODULES / "onnxruntime-node").is_dir(), "clients/js has no node_modules: cd clients/js && npm ci")


def decode(result: dict[str, Any], hex_text: str) -> np.ndarray:
    dtype = {"float32": np.float32, "int64": np.int64}[result["dtype"]]
    return np.frombuffer(bytes.fromhex(hex_text), dtype=dtype).reshape(result["shape"])


def run_node(model: Path, images: np.ndarray, sessions: int = 1, runs: int = 1) -> dict[str, Any]:
    """Releases of ``model`` on ``images`` (float32 (N, C, H, W)) from onnxruntime-node."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "images.f32"
        np.ascontiguousarray(images, dtype=np.float32).tofile(path)
        dims = ",".join(str(d) for d in images.shape)
        completed = subprocess.run(
            ["node", str(CLIENT / "run_guarded.js"), "release", str(model), str(path), dims, str(sessions), str(runs)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Path] = {}
    results: list[dict[str, Any]] = []
    arrived = threading.Event()

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        target = self.routes.get(path)
        if target is None and path.startswith("/ort/"):
            target = NODE_MODULES / "onnxruntime-web" / "dist" / path[len("/ort/") :]
        if target is None or not target.is_file() or ".." in path:
            self.send_error(404)
            return
        data = target.read_bytes()
        kind = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript"}.get(
            target.suffix, "text/html" if target.suffix == ".html" else "application/octet-stream"
        )
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).results.append(json.loads(body))
        self.send_response(204)
        self.end_headers()
        type(self).arrived.set()


def run_web(model: Path, images: np.ndarray, timeout: float = 120.0) -> dict[str, Any]:
    """The page's report: releases of ``model`` in onnxruntime-web (wasm) inside headless Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    need(chromium is not None, "chromium is not installed (apt-get install chromium)")
    need((NODE_MODULES / "onnxruntime-web" / "dist").is_dir(), "clients/js has no onnxruntime-web: npm ci")
    with tempfile.TemporaryDirectory() as folder:
        folder_path = Path(folder)
        np.ascontiguousarray(images, dtype=np.float32).tofile(folder_path / "images.f32")
        (folder_path / "dims.json").write_text(json.dumps(list(images.shape)))

        class Handler(_Handler):
            routes = {
                "/": CLIENT / "web" / "index.html",
                "/edgeguard.js": CLIENT / "edgeguard.js",
                "/model.onnx": model,
                "/images.f32": folder_path / "images.f32",
                "/dims.json": folder_path / "dims.json",
            }
            results: list[dict[str, Any]] = []
            arrived = threading.Event()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        profile = folder_path / "profile"
        browser = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"http://127.0.0.1:{server.server_port}/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            arrived = Handler.arrived.wait(timeout)
        finally:
            browser.kill()
            _, stderr = browser.communicate(timeout=30)
            server.shutdown()
            server.server_close()
        assert arrived, f"the page reported nothing within {timeout:g} s; chromium said: {stderr.decode()[-2000:]}"
        return Handler.results[0]
