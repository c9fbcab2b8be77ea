"""``python -m trackvision.stage_server [--socket PATH]``: serve stage commands until stopped.

Prints the line to export in the shell that runs ``dvc repro`` or ``dvc exp run``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from trackvision.stage_server.child import Forked, exit_child, run_child
from trackvision.stage_server.protocol import ENV_VAR, private_socket
from trackvision.stage_server.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m trackvision.stage_server",
        description="Import torch and MLflow once; run each stage command in a forked child.",
    )
    parser.add_argument("--socket", type=Path, help="default: a new private folder in /tmp")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per command")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    path = args.socket or private_socket()
    print(f"export {ENV_VAR}={path}", flush=True)
    try:
        serve(path)
    except Forked as forked:
        exit_child(run_child(forked.request, forked.fds, forked.server))


if __name__ == "__main__":
    main()
