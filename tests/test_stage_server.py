"""The stage server: a served stage is the stage's own process in all but its start-up."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_project
from trackvision.stage_server.client import run_served
from trackvision.stage_server.launch import stage_server
from trackvision.stage_server.protocol import ENV_VAR, RAN_ITSELF

TRACKVISION = str(Path(os.sys.executable).with_name("trackvision"))
FELL_BACK = RAN_ITSELF


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    """One real server for the module (its imports cost seconds), in this environment."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    with stage_server(env) as served:
        yield {**env, **served}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cnn project with its data stages run, ready for ``train``."""
    root = tmp_path_factory.mktemp("served")
    tiny_project(root, yaml.safe_load((REPO / "params.yaml").read_text()))
    return root


def trackvision(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TRACKVISION, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_a_served_train_writes_the_bytes_its_own_process_writes(
    server: dict[str, str], project: Path
) -> None:
    served = trackvision(["train", "--model", "cnn"], project, server)
    assert served.returncode == 0, served.stderr[-3000:]
    assert FELL_BACK not in served.stderr
    assert "epoch 2/2" in served.stderr  # the child's log reached the command's own stderr
    kept = project / "served-models"
    os.rename(project / "models", kept)
    alone = trackvision(["train", "--model", "cnn"], project, {**server, ENV_VAR: ""})
    assert alone.returncode == 0, alone.stderr[-3000:]
    files = sorted(p.relative_to(kept) for p in kept.rglob("*") if p.is_file())
    assert files, "train wrote no model files"
    _match, mismatch, errors = filecmp.cmpfiles(kept, project / "models", files, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_a_failing_stage_exits_with_its_status_and_says_why(
    server: dict[str, str], tmp_path: Path
) -> None:
    args = ["--params", str(tmp_path / "missing.yaml"), "plan"]
    served = trackvision(args, tmp_path, server)
    alone = trackvision(args, tmp_path, {**server, ENV_VAR: ""})
    assert served.returncode == alone.returncode != 0
    assert FELL_BACK not in served.stderr
    assert "missing.yaml" in served.stderr.splitlines()[-1]


def test_other_import_time_settings_make_the_stage_run_itself(
    server: dict[str, str], project: Path
) -> None:
    threads = "3" if server.get("OMP_NUM_THREADS") != "3" else "1"
    proc = trackvision(["plan"], project, {**server, "OMP_NUM_THREADS": threads})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "import-time settings differ: OMP_NUM_THREADS" in proc.stderr
    assert FELL_BACK in proc.stderr
    assert "plan: {" in proc.stderr  # and it ran


def test_a_bad_request_leaves_the_server_serving(server: dict[str, str], project: Path) -> None:
    import socket

    for payload in (b"", b"not a request", (5).to_bytes(8, "big") + b"{"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(server[ENV_VAR])
            conn.sendall(payload)
    # With the three streams, as a command sends them: JSON, but not a request.
    for body in (b"5", b"[]", b'"plan"'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(server[ENV_VAR])
            socket.send_fds(conn, [len(body).to_bytes(8, "big") + body], [0, 1, 2])
            assert conn.recv(1) == b""  # closed without a reply: dropped, nothing forked
    proc = trackvision(["plan"], project, server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FELL_BACK not in proc.stderr


def test_a_served_dvc_is_dvc_in_that_directory_with_its_output_and_status(
    server: dict[str, str], tmp_path: Path
) -> None:
    """A search runs each trial's ``dvc exp run`` through the server: the same command, its
    output line by line, its exit status."""
    seen: list[str] = []
    code, out = run_served("dvc", ["init", "--no-scm"], tmp_path, server, seen.append)
    assert code == 0, out
    assert (tmp_path / ".dvc" / "config").is_file()  # in the directory asked, not the server's
    assert "".join(seen) == out and "Initialized DVC repository" in out
    code, out = run_served("dvc", ["repro"], tmp_path, server)
    assert code != 0 and "dvc.yaml' does not exist" in out  # stderr comes too


def test_a_program_the_server_does_not_run_is_refused(
    server: dict[str, str], tmp_path: Path
) -> None:
    assert run_served("rm", ["-rf", str(tmp_path)], tmp_path, server) is None
    assert tmp_path.is_dir()


def test_no_server_at_the_socket_means_the_stage_runs_itself(project: Path, tmp_path: Path) -> None:
    env = {**os.environ, ENV_VAR: str(tmp_path / "no-such-socket")}
    proc = trackvision(["plan"], project, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FELL_BACK in proc.stderr and "no-such-socket" in proc.stderr


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def _served_child(server: dict[str, str], timeout: float = 120) -> int:
    """The server's child: the only one, as this module's tests run one after another."""
    pid = _server_pid(server)
    deadline = time.monotonic() + timeout
    while not (children := _children(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(children) == 1, children
    return children[0]


def _server_pid(server: dict[str, str]) -> int:
    """The process serving on this socket (its children share its command line)."""
    socket = server[ENV_VAR].encode()
    found = {
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and socket in _cmdline(p) and b"stage_server" in _cmdline(p)
    }
    (pid,) = [pid for pid in found if not any(pid in _children(other) for other in found)]
    return pid


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("how", ["interrupt", "kill"])
def test_stopping_the_command_stops_its_child(
    server: dict[str, str], project: Path, tmp_path: Path, how: str
) -> None:
    """Ctrl-C reaches the child through its command; a killed command's child is stopped."""
    command = _long_train(project, tmp_path, server)
    child = _served_child(server)
    seen = _read_until(command, "MLflow run")  # training has begun: the stage handles Ctrl-C
    if how == "interrupt":
        command.send_signal(signal.SIGINT)
        _, stderr = command.communicate(timeout=60)
        assert command.returncode == 130, (seen + stderr)[-3000:]
        assert "interrupted" in stderr
    else:
        command.kill()
        command.wait()
    _wait_gone(child)


def _read_until(command: subprocess.Popen, needle: str) -> str:
    """The command's stderr up to the first line holding ``needle``."""
    seen = ""
    for line in command.stderr:
        seen += line
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never came:\n{seen[-3000:]}")


def _long_train(project: Path, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = 500
    long = tmp_path / "long.yaml"
    long.write_text(yaml.safe_dump(params))
    return subprocess.Popen(
        [TRACKVISION, "--params", str(long), "train", "--model", "cnn"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), f"pid {pid} still runs"


def test_a_killed_server_takes_its_children_along(project: Path, tmp_path: Path) -> None:
    """As a kill of a whole process group (a search's) does: the command and the server at once."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    with stage_server(env) as served:
        command = _long_train(project, tmp_path, {**env, **served})
        child = _served_child({**env, **served})
        server = _server_pid({**env, **served})
        command.kill()
        os.kill(server, signal.SIGKILL)
        command.wait()
        _wait_gone(child)


def test_a_server_that_cannot_start_leaves_the_stages_to_themselves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("sys.executable", "/bin/false")
    with stage_server(dict(os.environ)) as served:
        assert served == {}
    assert "exited 1 before it was ready" in caplog.text
