"""The stage command's side: hand the command to the server, wait, exit with the child's status.

Stdlib only, and imported before anything heavy, so a served stage starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

from trackvision.stage_server.protocol import (
    ENV_VAR,
    RAN_ITSELF,
    SERVED_STAGES,
    encode,
    request,
)

if TYPE_CHECKING:  # the client starts in milliseconds: nothing it does not need
    from collections.abc import Callable
    from pathlib import Path

log = logging.getLogger(__name__)

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_on_server(argv: list[str], stage: str) -> int | None:
    """The exit status of ``trackvision <argv>`` (a ``stage`` command) run by the stage server;
    None: run it here."""
    path = os.environ.get(ENV_VAR)
    if not path or stage not in SERVED_STAGES:
        return None
    conn = _connect(path, RAN_ITSELF)
    if conn is None:
        return None
    with conn:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        replies = conn.makefile("r", encoding="utf-8")
        first = _start(conn, replies, encode(request(argv)), [0, 1, 2])
        if "refused" in first:
            log.warning("stage server %s refused (%s); %s", path, first["refused"], RAN_ITSELF)
            return None
        return _wait(replies, first["pid"])


def run_served(
    program: str,
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    on_line: Callable[[str], None] = lambda _line: None,
) -> tuple[int, str] | None:
    """``program argv`` run by the stage server at ``env``'s socket, its output (stdout and
    stderr as one stream) handed to ``on_line`` line by line as it comes; returns the exit
    status and the whole output, or None where no server takes it (run it yourself then).

    For a caller that is not the command itself (a search's worker thread): no signals are
    forwarded; if the caller goes away, the server stops the child."""
    path = env.get(ENV_VAR)
    if not path:
        return None
    conn = _connect(path, f"{program} runs in its own process")
    if conn is None:
        return None
    with conn:
        replies = conn.makefile("r", encoding="utf-8")
        read_end, write_end = os.pipe()
        with (
            open(os.devnull, "rb") as stdin,
            open(read_end, encoding="utf-8", errors="replace") as out,
        ):
            message = encode(request(argv, program, str(cwd), env))
            try:
                first = _start(conn, replies, message, [stdin.fileno(), write_end, write_end])
            finally:
                os.close(write_end)  # the child holds its own copy: EOF comes when it ends
            if "refused" in first:
                log.warning("stage server %s refused %s (%s)", path, program, first["refused"])
                return None
            lines = []
            for line in out:
                on_line(line)
                lines.append(line)
        reply = _reply(replies)
    if reply is None:
        log.error(
            "stage server: the connection closed before %s (pid %d) exited", program, first["pid"]
        )
        return 1, "".join(lines)
    return int(reply["exit"]), "".join(lines)


def _connect(path: str, otherwise: str) -> socket.socket | None:
    """A connection to the server at ``path``; None, logged with ``otherwise``, if none."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError as exc:
        conn.close()
        log.warning("%s=%s: %s; %s", ENV_VAR, path, exc.strerror, otherwise)
        return None
    return conn


def _start(conn: socket.socket, replies, message: bytes, fds: list[int]) -> dict:
    """Send the request with the command's standard streams; the server's first reply: its
    child's pid, or why it refused."""
    try:
        sent = socket.send_fds(conn, [message], fds)
        if sent < len(message):
            conn.sendall(message[sent:])
        first = _reply(replies)
    except OSError as exc:
        # Nothing started: a server forks only once it holds the whole request, and one that
        # did would stop that child when this connection closes.
        return {"refused": exc.strerror or str(exc)}
    return first if first is not None else {"refused": "it closed the connection"}


def _reply(replies) -> dict | None:
    line = replies.readline()
    return json.loads(line) if line else None


def _wait(replies, pid: int) -> int:
    """Pass signals on to the child's process group until the server reports its exit."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        reply = _reply(replies)  # reads resume after a forwarded signal (PEP 475)
    except OSError:  # the server died (its children die with it)
        reply = None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if reply is None:
        log.error("stage server: the connection closed before the stage %d exited", pid)
        return 1
    return int(reply["exit"])
