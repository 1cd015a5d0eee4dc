"""A tiny HTTP server on 127.0.0.1 standing where a node is expected: it answers every request
with what the test scripted for that path (or the default answer), and can be shut down."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.harness import free_port

Answer = tuple[int, str, bytes]  # status, content type, body


def json_answer(document: Any, status: int = 200) -> Answer:
    return status, "application/json", json.dumps(document).encode()


HTML_PAGE: Answer = (200, "text/html", b"<html><head><title>Welcome</title></head><body>It works!</body></html>")


class FakePeer:
    def __init__(self, default: Answer) -> None:
        self.default = default
        self.answers: dict[str, Answer] = {}  # path without the query -> answer
        self.headers: dict[str, list[tuple[str, str]]] = {}  # path -> more headers for its answer
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request answered
        self.received: list[tuple[str, str, dict[str, str], bytes]] = []  # (method, raw path, headers, body)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                path = self.path.split("?")[0]
                peer.requests.append((self.command, path))
                peer.received.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, content_type, body = peer.answers.get(path, peer.default)
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                for name, value in peer.headers.get(path, []):
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fake-peer-{self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
