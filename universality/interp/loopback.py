"""A loopback server speaking the OpenAI chat-completions wire format, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1 with replies from a function of the
messages, after a fixed latency, and can be told to misbehave for the next requests: ``"429"``, ``"500"``,
``"malformed"`` (a body that is not JSON), ``"no_choices"`` (JSON without ``choices``), ``"unreadable"`` (valid
format, content ``"???"``), ``"timeout"`` (answers after ``slow_s`` seconds) or ``"drop"`` (closes the connection
without answering). Nothing leaves the machine.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class LoopbackEndpoint:
    """A running loopback server (use as a context manager, or call :meth:`close`).

    Attributes:
        url: the API root (``http://127.0.0.1:PORT/v1``); faults: misbehaviours still to come, in order;
        n_chat: chat requests received; auth: the ``Authorization`` headers received (tests check what was sent);
        max_in_flight: most requests handled at the same time.
    """

    def __init__(self, reply: Callable[[list], str] | None = None, models: tuple[str, ...] = ("loopback-model",),
                 latency_s: float = 0.0, slow_s: float = 5.0, api_key: str | None = None):
        self.reply = reply or (lambda messages: "ok")
        self.models = models
        self.latency_s, self.slow_s, self.api_key = latency_s, slow_s, api_key
        self.faults: list[str] = []
        self.n_chat = 0
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "LoopbackEndpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler(self):
        ep = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                super().setup()  # headers and body go out as separate writes: no Nagle delay between them
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, code: int, body: bytes, ctype: str = "application/json", headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if ep.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {ep.api_key}":
                    return True
                self._send(401, json.dumps({"error": {"message": "invalid api key"}}).encode())
                return False

            def do_GET(self):
                if not self._authorised():
                    return
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in ep.models]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                with ep._lock:
                    ep.n_chat += 1
                    ep.auth.append(self.headers.get("Authorization"))
                    fault = ep.faults.pop(0) if ep.faults else None
                    ep.in_flight += 1
                    ep.max_in_flight = max(ep.max_in_flight, ep.in_flight)
                try:
                    self._answer(body, fault)
                finally:
                    with ep._lock:
                        ep.in_flight -= 1

            def _answer(self, body: dict, fault: str | None):
                if not self._authorised():
                    return
                if body.get("model") not in ep.models:
                    self._send(404, json.dumps({"error": {"message": f"model '{body.get('model')}' does not exist"}}).encode())
                    return
                if ep.latency_s:
                    time.sleep(ep.latency_s)
                if fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if fault == "timeout":
                    time.sleep(ep.slow_s)
                if fault == "429":
                    self._send(429, b'{"error": {"message": "rate limited"}}', headers={"Retry-After": "0"})
                    return
                if fault == "500":
                    self._send(500, b'{"error": {"message": "server error"}}')
                    return
                if fault == "malformed":
                    self._send(200, b"<html>not json", ctype="text/html")
                    return
                if fault == "no_choices":
                    self._send(200, b'{"id": "x", "object": "chat.completion"}')
                    return
                content = "???" if fault == "unreadable" else ep.reply(body.get("messages") or [])
                out = {"id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
                self._send(200, json.dumps(out).encode())

        return Handler
