"""An HTTP server with bounded cost per client, for the web view (standard library only).

A connection waits in a selector until its whole request head has arrived: an idle socket, or one
that trickles half a request line (slowloris), costs a file descriptor, not a thread, and cannot
starve the page. A complete request runs on a fixed pool of workers with a socket timeout; a
request beyond the pool is answered 503 at once. A connection whose head has not arrived within the
timeout, or that comes when the waiting room is full, is closed.
"""
from __future__ import annotations

import io
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Dict, Tuple

SOCKET_TIMEOUT = 10.0      # seconds a client may stay silent (or unable to take data) before it is dropped
MAX_WAITING = 256          # connections whose request head has not arrived yet
MAX_HEAD = 65536           # a head longer than this is passed on as it is (http.server answers 431/414)
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _WaitingRoom:
    """Connections whose request head is still arriving; each goes to ``dispatch`` with the bytes read."""

    def __init__(self, dispatch, close) -> None:
        self.dispatch, self.close_connection = dispatch, close
        self.selector = selectors.DefaultSelector()
        self.arrived: Dict[socket.socket, float] = {}
        self.heads: Dict[socket.socket, bytes] = {}
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._watch, name="web-waiting", daemon=True)
        self.thread.start()

    def add(self, request: socket.socket, client_address) -> None:
        with self.lock:
            if len(self.arrived) >= MAX_WAITING or not self.running:
                self.close_connection(request)
                return
            request.setblocking(False)
            self.arrived[request], self.heads[request] = time.monotonic(), b""
            self.selector.register(request, selectors.EVENT_READ, client_address)

    def _take(self, request: socket.socket) -> bytes:
        self.selector.unregister(request)
        del self.arrived[request]
        return self.heads.pop(request)

    def _read(self, request: socket.socket, client_address) -> None:
        try:
            chunk = request.recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client went away before asking anything
            self._take(request)
            self.close_connection(request)
            return
        head = self.heads[request] + chunk
        self.heads[request] = head
        if b"\r\n\r\n" in head or b"\n\n" in head or len(head) >= MAX_HEAD:
            self._take(request)
            request.setblocking(True)
            self.dispatch(request, client_address, head)

    def _watch(self) -> None:
        while self.running:
            ready = self.selector.select(timeout=0.25)
            with self.lock:
                for key, _ in ready:
                    if key.fileobj in self.arrived:
                        self._read(key.fileobj, key.data)
                deadline = time.monotonic() - SOCKET_TIMEOUT
                for request in [r for r, since in self.arrived.items() if since < deadline]:
                    self._take(request)
                    self.close_connection(request)

    def close(self) -> None:
        with self.lock:
            self.running = False
            for request in list(self.arrived):
                self._take(request)
                self.close_connection(request)
        self.thread.join(timeout=2)
        self.selector.close()


class _HeadFirst(io.RawIOBase):
    """A socket's reader that first gives back the request head the waiting room already read."""

    def __init__(self, head: bytes, sock: socket.socket) -> None:
        self.head, self.socket_reader = io.BytesIO(head), socket.SocketIO(sock, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.head.readinto(buffer)
        return count if count else self.socket_reader.readinto(buffer)

    def close(self) -> None:
        self.socket_reader.close()  # the socket closes for real only once no reader holds it
        super().close()


class PooledRequestHandler(BaseHTTPRequestHandler):
    """A handler for PooledHTTPServer: it reads the request head the server took in before it."""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_HeadFirst(self.server.heads.pop(self.request, b""), self.request))


class PooledHTTPServer(HTTPServer):
    """``HTTPServer`` whose requests run on ``workers`` threads, with connections still sending their
    request kept off them. Its handler class derives from PooledRequestHandler."""

    request_queue_size = 128  # the listen backlog: a burst of connections is accepted, not refused

    def __init__(self, address: Tuple[str, int], handler, workers: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        # before binding: a failed bind calls server_close, which shuts these down
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="web")
        self.slots = threading.BoundedSemaphore(workers)
        self.heads: Dict[socket.socket, bytes] = {}  # what the waiting room read, for the handler
        self.waiting = _WaitingRoom(self._dispatch, self.shutdown_request)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        self.waiting.add(request, client_address)

    def _dispatch(self, request, client_address, head: bytes) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.heads[request] = head
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request, client_address) -> None:
        try:
            request.settimeout(SOCKET_TIMEOUT)
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 (a broken client must not end the worker; socketserver does the same)
            self.handle_error(request, client_address)
        finally:
            self.heads.pop(request, None)
            self.shutdown_request(request)
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        """Quiet: a client that goes away or times out is not an error of the run."""

    def server_close(self) -> None:
        super().server_close()
        self.waiting.close()
        self.pool.shutdown(wait=False)
