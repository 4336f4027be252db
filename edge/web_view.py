"""A small built-in web view: the live annotated stream (MJPEG) and the latest results, standard library only.

    classify.py csi://0 http://@:8080      # all interfaces: prints a URL with an access token
    classify.py csi://0 http://127.0.0.1:8080

``/`` is the page, ``/app.js`` its script, ``/stream.mjpg`` the multipart JPEG stream (every frame as
it is annotated), ``/latest.jpg`` the last frame, ``/results.json`` the latest results and the run's
counters. The view shows patient images, so:
- it binds to the interface named; on any other than loopback (``@`` is all interfaces, as in
  jetson-inference) a token is required, printed at start as part of the URL (as notebook servers do)
  and kept in a cookie by the browser, unless ``--web-token none`` turns it off;
- file names and results reach the page as text, never as HTML (the page builds them with
  ``textContent``), and the page sends security headers (a content security policy among them);
- connections are served by a bounded pool of workers, each socket with a timeout, and a connection
  that has sent nothing holds no thread at all (edge/http_pool.py): idle or slow clients cannot pile
  up threads or starve the page, and a request beyond the pool gets 503 at once.
"""
from __future__ import annotations

import errno
import hmac
import json
import secrets
import select
import socket
import threading
from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.edge.http_pool import SOCKET_TIMEOUT, PooledHTTPServer, PooledRequestHandler

_BOUNDARY = "cxrframe"
_COOKIE = "cxr_token"
MAX_CONNECTIONS = 16       # workers: streams, page loads and polls at the same time
_LOOPBACK = ("127.", "localhost", "::1")
# jetson-inference's "@" binds every interface; the access token is what guards the patient images then.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (only when the user asks for it, and then a token is required)
# --web-token's two keywords; anything else is the token itself.
TOKEN_AUTO, TOKEN_NONE = "auto", "none"
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; margin: 0; background: #111; color: #eee; display: flex; flex-wrap: wrap; }}
 main {{ flex: 3 1 480px; padding: 12px; }} aside {{ flex: 1 1 280px; padding: 12px; }}
 img {{ max-width: 100%; max-height: 88vh; background: #000; }}
 table {{ border-collapse: collapse; width: 100%; font-size: 13px; }} td, th {{ padding: 3px 6px; text-align: left; }}
 tr:nth-child(even) {{ background: #1c1c1c; }} .positive {{ color: #ff6b6b; }} .negative {{ color: #7bd67b; }} .refer {{ color: #ffb347; }} .not_assessed {{ color: #9a9a9a; }}
 small {{ color: #999; }}
</style></head>
<body>
<main><img id="stream" src="/stream.mjpg" alt="live annotated stream"></main>
<aside><h3>{title}</h3><p id="summary">waiting for frames...</p>
<table><thead><tr><th>#</th><th>result</th><th>source</th></tr></thead><tbody id="results"></tbody></table>
<p><small>Screening aid only; not a diagnostic device.</small></p></aside>
<script src="/app.js"></script></body></html>
"""
# Every value from the run (file names included) is set as text: nothing a file name holds is markup.
_SCRIPT = b"""
function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = String(text);
  if (className) td.className = className;
  return td;
}
async function refresh() {
  try {
    const data = await (await fetch('/results.json', {cache: 'no-store'})).json();
    const parts = [`${data.frames} frames`, `${data.positives} positive`];
    if (data.refer) parts.push(`${data.refer} REFER`);  // a model with an input gate (core/input_gate.py)
    if (data.not_assessed) parts.push(`${data.not_assessed} not assessed`);
    parts.push(`${data.failures} skipped`);
    document.getElementById('summary').textContent = parts.join(', ');
    const rows = data.latest.map(r => {
      const tr = document.createElement('tr');
      const kind = r.status === 'ok' ? (r.positive === true ? 'positive' : 'negative') : r.status;
      tr.append(cell(r.index), cell(r.text, kind), cell(r.source));
      return tr;
    });
    document.getElementById('results').replaceChildren(...rows);
  } catch (e) { document.getElementById('summary').textContent = 'disconnected'; }
}
setInterval(refresh, 500); refresh();
"""


def parse_web_address(output: str) -> Tuple[str, int]:
    """``http://@:8080`` (all interfaces, jetson-inference style), ``http://127.0.0.1:8080`` -> (host, port)."""
    address = output[len("http://"):].split("/", 1)[0]
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ToolkitError(f"{output}: give a port, e.g. http://@:8080")
    return (ALL_INTERFACES if host in ("", "@") else host.strip("[]")), int(port)


def is_loopback(host: str) -> bool:
    return host.startswith(_LOOPBACK)


def is_every_interface(host: str) -> bool:
    return host in (ALL_INTERFACES, "::")


class WebView:
    def __init__(self, host: str, port: int, token: str = TOKEN_AUTO, title: str = "cxr-jetson classify",
                 workers: int = MAX_CONNECTIONS) -> None:
        """``token``: "auto" (required unless ``host`` is loopback), "none", or the token itself."""
        self.page = _PAGE.format(title=title).encode()
        self.token = (secrets.token_urlsafe(16) if token == TOKEN_AUTO and not is_loopback(host)
                      else None if token in (TOKEN_AUTO, TOKEN_NONE) else token)
        self.condition = threading.Condition()
        self.jpeg: Optional[bytes] = None
        self.sequence = 0
        self.latest: Deque[Dict[str, Any]] = deque(maxlen=40)
        self.counters = {"frames": 0, "positives": 0, "refer": 0, "not_assessed": 0, "failures": 0}
        self.closed = False
        try:
            handler = type("Handler", (_ViewHandler,), {"view": self})  # this view's requests
            self.server = PooledHTTPServer((host, port), handler, workers)
        except OSError as err:
            reason = "is already in use" if err.errno == errno.EADDRINUSE else f"cannot be opened ({err.strerror})"
            raise ToolkitError(f"web view port {port} on {host} {reason}; pick another, e.g. http://@:8081") from None
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
            status = result.get("status")
            if status in ("refer", "not_assessed"):
                self.counters[status] += 1
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

    def allowed(self, query: str, cookie: str) -> Tuple[bool, bool]:
        """(may the request be served, did it bring the token in its URL: then set the cookie)."""
        if self.token is None:
            return True, False
        given = parse_qs(query).get("token", [""])[0]
        if given and hmac.compare_digest(given, self.token):
            return True, True
        cookies = dict(part.strip().split("=", 1) for part in cookie.split(";") if "=" in part)
        return hmac.compare_digest(cookies.get(_COOKIE, ""), self.token), False

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()
        self.server.shutdown()
        self.server.server_close()


class _ViewHandler(PooledRequestHandler):
    """The view's requests; ``view`` is set on the subclass each WebView makes."""

    view: "WebView"
    timeout = SOCKET_TIMEOUT
    server_version = "cxr-jetson"
    sys_version = ""

    def log_message(self, *args) -> None:  # keep the console for results
        pass

    def _headers(self, status: int, content_type: str, length: Optional[int], set_cookie: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        if set_cookie:
            self.send_header("Set-Cookie", f"{_COOKIE}={self.view.token}; HttpOnly; SameSite=Strict; Path=/")
        self.end_headers()

    def _send(self, body: bytes, content_type: str, set_cookie: bool = False, status: int = 200) -> None:
        self._headers(status, content_type, len(body), set_cookie)
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        allowed, set_cookie = self.view.allowed(url.query, self.headers.get("Cookie", ""))
        if not allowed:
            self._send(b"open the URL classify.py printed (it carries the access token)\n",
                       "text/plain; charset=utf-8", status=403)
        elif url.path in ("/", "/index.html"):
            self._send(self.view.page, "text/html; charset=utf-8", set_cookie)
        elif url.path == "/app.js":
            self._send(_SCRIPT, "text/javascript; charset=utf-8", set_cookie)
        elif url.path == "/results.json":
            self._send(self.view._snapshot(), "application/json", set_cookie)
        elif url.path == "/latest.jpg" and self.view.jpeg is not None:
            self._send(self.view.jpeg, "image/jpeg", set_cookie)
        elif url.path == "/stream.mjpg":
            self._stream(set_cookie)
        else:
            self._send(b"not found\n", "text/plain; charset=utf-8", status=404)

    def _stream(self, set_cookie: bool) -> None:
        self._headers(200, f"multipart/x-mixed-replace; boundary={_BOUNDARY}", None, set_cookie)
        seen = -1
        try:
            while not self.view.closed:
                jpeg, sequence = self.view._next_frame(seen)
                if jpeg is None or sequence == seen:
                    if self._client_gone():  # no frame to write would notice it: a paused input
                        return
                    continue
                seen = sequence
                self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                self.wfile.flush()
        except OSError:
            pass  # the browser went away, or stopped taking data for SOCKET_TIMEOUT

    def _client_gone(self) -> bool:
        """The viewer closed the connection (a stream client sends nothing after its request)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
