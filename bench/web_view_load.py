"""Load test of the web view on loopback: many connections held open, the page asked for meanwhile.

    python3 -m bench.web_view_load [--connections 100] [--output bench/results/web_view_load.json]

Two floods, each against the baseline (the standard library's ThreadingHTTPServer, a thread per
connection, which the view used before) and ours (edge/http_pool.py), with the same page handler:
- idle: sockets that connect and send nothing (a port scanner, a browser's preconnect, an attacker);
- slow: sockets that send half a request line and stop (slowloris).
For each: threads, open descriptors and resident memory before, during and after (once the socket
timeout has passed), and whether the page answered during and after. Prints a table and the
threads each server added, and writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Dict, List

import cv2
import numpy as np

from cxr_jetson.edge.http_pool import SOCKET_TIMEOUT
from cxr_jetson.edge.web_view import WebView

HOST = "127.0.0.1"


def process_figures() -> Dict[str, float]:
    """Threads (the kernel's count: every native thread), open descriptors and resident MiB of this process."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {"threads": int(status["Threads"]), "descriptors": len(os.listdir("/proc/self/fd")),
            "rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1)}


def page_status(port: int) -> int:
    """The page's HTTP status (0: no answer within 5 s)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def _flood(port: int, count: int, slow: bool) -> List[socket.socket]:
    sockets = []
    for _ in range(count):
        client = socket.create_connection((HOST, port), timeout=5)
        if slow:
            client.sendall(b"GET /stream.mj")
        sockets.append(client)
    return sockets


class _ThreadPerConnection(ThreadingHTTPServer):
    request_queue_size = 128  # the same listen backlog as ours
    daemon_threads = True
    heads: Dict = {}  # no request head is read ahead here: the handler reads it all from the socket


def _view_with_baseline_server(view: WebView) -> None:
    """Swap the view's server for the baseline: the same handler, a thread per connection."""
    handler = view.server.RequestHandlerClass
    view.server.shutdown()
    view.server.server_close()
    view.server = _ThreadPerConnection((HOST, 0), handler)
    view.port = view.server.server_address[1]
    view.thread = threading.Thread(target=view.server.serve_forever, daemon=True)
    view.thread.start()


def measure(server: str, flood: str, connections: int) -> Dict[str, object]:
    view = WebView(HOST, 0)
    if server == "baseline":
        _view_with_baseline_server(view)
    ok, jpeg = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    view.publish(jpeg.tobytes(), {"index": 1, "text": "NORMAL 90%", "positive": False, "source": "a.png"})
    try:
        before = process_figures()
        sockets = _flood(view.port, connections, slow=flood == "slow")
        time.sleep(1.0)  # let every connection reach the server
        during = process_figures()
        answered_during = page_status(view.port)
        time.sleep(SOCKET_TIMEOUT + 1.5)  # past the socket timeout: what stays is a leak
        after = process_figures()
        answered_after = page_status(view.port)
        for client in sockets:
            client.close()
    finally:
        view.close()
    return {"server": server, "flood": flood, "connections": connections, "before": before, "during": during,
            "after": after, "page_during": answered_during, "page_after": answered_after}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--output", default=os.path.join("bench", "results", "web_view_load.json"))
    args = parser.parse_args(argv)
    runs = [measure(server, flood, args.connections) for flood in ("idle", "slow") for server in ("baseline", "ours")]
    print(f"{args.connections} connections held on loopback; socket timeout {SOCKET_TIMEOUT:.0f} s")
    print(f"{'flood':6} {'server':9} {'threads before/during/after':>28} {'fds during':>10} "
          f"{'RSS MiB before/during/after':>28} {'page during':>11} {'page after':>10}")
    for run in runs:
        b, d, a = run["before"], run["during"], run["after"]
        print(f"{run['flood']:6} {run['server']:9} {b['threads']:>12} / {d['threads']:>4} / {a['threads']:>4} "
              f"{d['descriptors']:>10} {b['rss_mib']:>12} / {d['rss_mib']:>5} / {a['rss_mib']:>5} "
              f"{run['page_during']:>11} {run['page_after']:>10}")
    for flood in ("idle", "slow"):
        base, ours = (next(r for r in runs if r["flood"] == flood and r["server"] == s) for s in ("baseline", "ours"))
        added = [r["during"]["threads"] - r["before"]["threads"] for r in (base, ours)]
        print(f"{flood}: threads added by {args.connections} connections: baseline +{added[0]}, ours +{added[1]}")
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump({"command": "python3 -m bench.web_view_load", "runs": runs}, handle, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
