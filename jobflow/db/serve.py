"""The embedded database's own process: SecantusDB, and a watchdog that stops it once nothing uses it.

Run as ``python -m jobflow.db.serve INSTANCE_FOLDER SECANTUS_ARGS...`` by ``EmbeddedServer``.

Every process of the product that uses the embedded database holds a shared lock on ``secantus.users``
for as long as it lives, and the kernel drops that lock however the process ends, ``kill -9`` included.
Every WATCH_SECONDS the watchdog takes ``secantus.lock`` (the lock under which users start the server,
register and stop it) and tries an exclusive lock on the users file. When it gets one, no process uses
the server: it forgets the server's pid (keeping the port for the next start), and stops the server
while still holding ``secantus.lock``, so no process can start or join a server on this folder until
this one has exited.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from secantus import cli

from jobflow.db.files import nobody_uses, write_private

WATCH_SECONDS = 1.0
STOP_DEADLINE = 20.0     # after SIGTERM: then the process ends without waiting for the server's shutdown


def _try_lock(lock_file: Path) -> int | None:
    """An fd holding ``secantus.lock`` exclusively, or None while another process holds it."""
    fd = os.open(lock_file, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _forget_pid(state_file: Path) -> None:
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    if isinstance(state, dict) and state.get("pid") == os.getpid():
        write_private(state_file, json.dumps({k: v for k, v in state.items() if k != "pid"}))


def watch(instance: Path) -> None:
    """Stop this process once no process of the product uses the server (see the module's docstring)."""
    while True:
        time.sleep(WATCH_SECONDS)
        fd = _try_lock(instance / "secantus.lock")
        if fd is None:
            continue                 # a user is starting, registering or stopping: look again next time
        if not nobody_uses(instance / "secantus.users"):
            os.close(fd)
            continue
        print("jobflow: no process of the product uses the embedded database any more: stopping it",
              file=sys.stderr, flush=True)
        _forget_pid(instance / "secantus.json")
        os.kill(os.getpid(), signal.SIGTERM)     # SecantusDB's own handler shuts it down in order
        time.sleep(STOP_DEADLINE)
        os._exit(1)                              # its shutdown hung: the lock goes with the process


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    threading.Thread(target=watch, args=(Path(args[0]),), name="watchdog", daemon=True).start()
    return cli.main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
