"""A Hugging Face hub on 127.0.0.1: files at ``/<repo>/resolve/<revision>/<name>``, with the
headers ``huggingface_hub`` reads (commit, ETag, size): timm's own download path, for real."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from tests.loopback import serve_handler

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files  # "<repo id>/<file name>" -> bytes
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.url = ""


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self, body: bool) -> None:
            hub.requests.append((self.command, self.path))
            repo_and_rest = self.path.split("?")[0].lstrip("/")
            repo, sep, rest = repo_and_rest.partition("/resolve/")
            name = rest.partition("/")[2] if sep else ""
            data = hub.files.get(f"{repo}/{name}")
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

    return Handler


@contextmanager
def serve_hub(files: dict[str, bytes]) -> Iterator[Hub]:
    hub = Hub(files)
    with serve_handler(_handler(hub)) as url:
        hub.url = url
        yield hub
