"""Servers on 127.0.0.1 for tests: an HTTP file server with Range support and scripted failures,
and helpers to start real servers (moto, mlflow, postgres) on free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Behaviour:
    """Per-path script: status codes to answer first, or a byte count after which to hang up."""

    fail_with: list[int] = field(default_factory=list)  # e.g. [500, 500] then serve
    drop_after: int | None = None  # send this many bytes, then close (once)
    ignore_range: bool = False


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)
    behaviour: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    url: str = ""


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            served.requests.append((name, self.headers.get("Range")))
            how = served.behaviour.get(name, Behaviour())
            if how.fail_with:
                self.send_error(how.fail_with.pop(0))
                return
            if name not in served.files:
                self.send_error(404)
                return
            body = served.files[name]
            start = 0
            rng = self.headers.get("Range")
            if rng and not how.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            chunk = body[start:]
            if how.drop_after is not None:
                chunk = chunk[: how.drop_after]
                how.drop_after = None
                self.wfile.write(chunk)
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(chunk)

    return Handler


@contextmanager
def serve_handler(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run ``handler`` on 127.0.0.1 (a free port) for the duration of the block; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve(served: Served) -> Iterator[Served]:
    """Serve ``served.files`` on 127.0.0.1 (a free port) for the duration of the block."""
    with serve_handler(_handler(served)) as url:
        served.url = url
        yield served


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Wait until ``proc`` listens on 127.0.0.1:``port``; fail with its log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited {proc.returncode}" if proc.poll() is not None else "timed out"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise RuntimeError(f"{proc.args[:3]} {state} before port {port}:\n{tail}") from None
            time.sleep(0.2)


@contextmanager
def program_on_port(
    cmd: list[str],
    port: int,
    log: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> Iterator[subprocess.Popen]:
    """Run the server ``cmd`` (its own process group, output to ``log``) until the block ends;
    the block starts once it listens on 127.0.0.1:``port``."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_port(port, proc, log, timeout)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
