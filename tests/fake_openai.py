"""A small OpenAI-compatible server for tests, speaking the protocol as vLLM does.

`FakeServer` answers like `vllm serve BASE --enable-lora --lora-modules NAME=PATH`:
`/v1/models` lists the base (with `max_model_len`) and each LoRA (with `parent` = the base);
`/v1/chat/completions` answers as JSON, or with `stream: true` as SSE `data: {...}` chunks
ending `data: [DONE]` (usage last when `stream_options.include_usage`), after applying the
request's stop strings and max_tokens itself; an unknown model gets vLLM's 404 error body;
with a `key`, a request without that bearer token gets a 401; with `fail_first=N` the first N chat
requests get a 503, as from a server that is restarting. It runs on 127.0.0.1 on a free
port in a daemon thread, records every request body, and replies "[<model>] <reply>" word by
word, so a test sees which model (base or adapter) answered.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BASE = "acme/support-lm-7b"  # no tokenizer for it here: token counts are estimated
LORA = "support-rag"


class FakeServer:
    """An OpenAI-compatible server on 127.0.0.1 that replies "[<model>] <reply>" word by word."""

    def __init__(
        self,
        *,
        reply: str = "Refunds take 5 business days [1].",
        delay: float = 0.0,
        key: str | None = None,
        fail_first: int = 0,
    ):
        self.reply, self.delay, self.key, self.fail_first = reply, delay, key, fail_first
        self.models = [
            {"id": BASE, "object": "model", "owned_by": "vllm", "root": BASE, "parent": None, "max_model_len": 2048},
            {"id": LORA, "object": "model", "owned_by": "vllm", "root": f"/adapters/{LORA}", "parent": BASE},
        ]
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models" and server.authorized(self):
                    self.send_json(200, {"object": "list", "data": server.models})
                elif self.path.rstrip("/") != "/v1/models":
                    self.send_json(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if self.path != "/v1/chat/completions":
                    return self.send_json(404, {"detail": "Not Found"})
                if not server.authorized(self):
                    return None
                if len(server.requests) <= server.fail_first:
                    return self.send_json(503, error("The server is restarting.", "ServiceUnavailableError", 503))
                if body["model"] not in {card["id"] for card in server.models}:
                    return self.send_json(
                        404, error(f"The model `{body['model']}` does not exist.", "NotFoundError", 404)
                    )
                time.sleep(server.delay)
                words, finish = server.answer(body)
                if body.get("stream"):
                    return self.send_stream(body, words, finish)
                text = "".join(words)
                message = {"role": "assistant", "content": text}
                choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                return self.send_json(200, completion(body, "chat.completion", [choice], usage(body, words)))

            def send_json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def send_stream(self, body: dict[str, Any], words: list[str], finish: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
                deltas = [{"role": "assistant", "content": ""}, *({"content": word} for word in words)]
                for delta in deltas:
                    self.event(completion(body, "chat.completion.chunk", [chunk_choice(delta, None)]))
                self.event(completion(body, "chat.completion.chunk", [chunk_choice({}, finish)]))
                if (body.get("stream_options") or {}).get("include_usage"):
                    self.event(completion(body, "chat.completion.chunk", [], usage(body, words)))
                self.wfile.write(b"data: [DONE]\n\n")

            def event(self, payload: dict[str, Any]) -> None:
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        if self.key is None or handler.headers.get("Authorization") == f"Bearer {self.key}":
            return True
        handler.send_json(401, {"error": "Unauthorized"})
        return False

    def answer(self, body: dict[str, Any]) -> tuple[list[str], str]:
        """The reply's words (with their spaces) after the server's own stop strings and max_tokens."""
        text = f"[{body['model']}] {self.reply}"
        for stop in body.get("stop") or []:
            text = text.split(stop, 1)[0]
        words = [word if i == 0 else " " + word for i, word in enumerate(text.split(" "))]
        limit = body.get("max_tokens") or len(words)
        return words[:limit], "length" if len(words) > limit else "stop"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def error(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def completion(body: dict[str, Any], kind: str, choices: list[dict], usage: dict | None = None) -> dict[str, Any]:
    payload = {"id": "chatcmpl-1", "object": kind, "created": 1700000000, "model": body["model"], "choices": choices}
    return {**payload, "usage": usage} if usage else payload


def chunk_choice(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def usage(body: dict[str, Any], words: list[str]) -> dict[str, int]:
    prompt = sum(len(message["content"].split()) for message in body["messages"])
    return {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends
