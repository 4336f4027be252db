"""A small built-in web view: the live annotated stream (MJPEG) and the latest results, standard library only.

    classify.py csi://0 http://@:8080      # then open http://<jetson>:8080 in a browser

``/`` is the page, ``/stream.mjpg`` the multipart JPEG stream (every frame as it is annotated),
``/latest.jpg`` the last frame, ``/results.json`` the latest results and the run's counters.
"""
from __future__ import annotations

import errno
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, Optional, Tuple

from cxr_jetson.core.errors import ToolkitError

_BOUNDARY = "cxrframe"
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; margin: 0; background: #111; color: #eee; display: flex; flex-wrap: wrap; }}
 main {{ flex: 3 1 480px; padding: 12px; }} aside {{ flex: 1 1 280px; padding: 12px; }}
 img {{ max-width: 100%; max-height: 88vh; background: #000; }}
 table {{ border-collapse: collapse; width: 100%; font-size: 13px; }} td, th {{ padding: 3px 6px; text-align: left; }}
 tr:nth-child(even) {{ background: #1c1c1c; }} .positive {{ color: #ff6b6b; }} .negative {{ color: #7bd67b; }}
 small {{ color: #999; }}
</style></head>
<body>
<main><img id="stream" src="/stream.mjpg" alt="live annotated stream"></main>
<aside><h3>{title}</h3><p id="summary">waiting for frames...</p>
<table><thead><tr><th>#</th><th>result</th><th>source</th></tr></thead><tbody id="results"></tbody></table>
<p><small>Screening aid only; not a diagnostic device.</small></p></aside>
<script>
async function refresh() {{
  try {{
    const data = await (await fetch('/results.json', {{cache: 'no-store'}})).json();
    document.getElementById('summary').textContent =
      `${{data.frames}} frames, ${{data.positives}} positive, ${{data.failures}} skipped`;
    document.getElementById('results').innerHTML = data.latest.map(r =>
      `<tr><td>${{r.index}}</td><td class="${{r.positive === true ? 'positive' : 'negative'}}">${{r.text}}</td>` +
      `<td>${{r.source}}</td></tr>`).join('');
  }} catch (e) {{ document.getElementById('summary').textContent = 'disconnected'; }}
}}
setInterval(refresh, 500); refresh();
</script></body></html>
"""


def parse_web_address(output: str) -> Tuple[str, int]:
    """``http://@:8080`` (all interfaces, jetson-inference style), ``http://127.0.0.1:8080`` -> (host, port)."""
    address = output[len("http://"):].rstrip("/")
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ToolkitError(f"{output}: give a port, e.g. http://@:8080")
    return ("0.0.0.0" if host in ("", "@") else host), int(port)


class WebView:
    def __init__(self, host: str, port: int, title: str = "cxr-jetson classify") -> None:
        self.page = _PAGE.format(title=title).encode()
        self.condition = threading.Condition()
        self.jpeg: Optional[bytes] = None
        self.sequence = 0
        self.latest: Deque[Dict[str, Any]] = deque(maxlen=40)
        self.counters = {"frames": 0, "positives": 0, "failures": 0}
        self.closed = False
        try:
            self.server = ThreadingHTTPServer((host, port), self._handler())
        except OSError as err:
            reason = "is already in use" if err.errno == errno.EADDRINUSE else f"cannot be opened ({err.strerror})"
            raise ToolkitError(f"web view port {port} on {host} {reason}; pick another, e.g. http://@:8081") from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, jpeg: bytes, result: Dict[str, Any]) -> None:
        with self.condition:
            self.jpeg = jpeg
            self.sequence += 1
            self.latest.appendleft(result)
            self.counters["frames"] += 1
            self.counters["positives"] += int(result.get("positive") is True)
            self.condition.notify_all()

    def failed(self) -> None:
        with self.condition:
            self.counters["failures"] += 1

    def _snapshot(self) -> bytes:
        with self.condition:
            return json.dumps({**self.counters, "latest": list(self.latest)}).encode()

    def _next_frame(self, seen: int) -> Tuple[Optional[bytes], int]:
        with self.condition:
            self.condition.wait_for(lambda: self.sequence != seen or self.closed, timeout=1.0)
            return self.jpeg, self.sequence

    def _handler(self):
        view = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the console for results
                pass

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?")[0]
                if path in ("/", "/index.html"):
                    self._send(view.page, "text/html; charset=utf-8")
                elif path == "/results.json":
                    self._send(view._snapshot(), "application/json")
                elif path == "/latest.jpg" and view.jpeg is not None:
                    self._send(view.jpeg, "image/jpeg")
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self.send_error(404)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = -1
                try:
                    while not view.closed:
                        jpeg, sequence = view._next_frame(seen)
                        if jpeg is None or sequence == seen:
                            continue
                        seen = sequence
                        self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the browser went away

        return Handler

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()
        self.server.shutdown()
        self.server.server_close()
