"""A SecantusDB server of the tests' own, and a fresh database on it for each test."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

from pymongo import MongoClient

from jobflow.db import free_port, ping


class DatabaseServer:
    """A SecantusDB server on loopback with a fixed port and data folder: start it, kill it (SIGKILL) and start
    it again on both."""

    def __init__(self, folder: Path, *args: str):
        self.folder = Path(folder)
        self.args = list(args)       # more flags (``--standalone``, oplog limits); may change between starts
        self.data_dir = self.folder / "data"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = self.folder / "secantus.log"

    @property
    def base_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def uri(self, name: str = "jobflow") -> str:
        return f"{self.base_uri}/{name}"

    def start(self, timeout: float = 30) -> float:
        """Start the server and wait until it answers; the seconds that took."""
        self.folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                 "--storage-path", str(self.data_dir), "--log-level", "WARNING", *self.args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while not ping(self.base_uri, 300):
            if self.process.poll() is not None:
                raise RuntimeError(f"SecantusDB exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"SecantusDB did not answer within {timeout}s; see {self.log}")
            time.sleep(0.05)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: no shutdown, no checkpoint."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait. SecantusDB now and then misses the first SIGTERM (its main thread is waiting): ask
        again, then kill."""
        if self.process is None:
            return
        for end in (self.process.terminate, self.process.terminate, self.process.kill):
            if self.process.poll() is not None:
                return
            end()
            try:
                self.process.wait(10)
                return
            except subprocess.TimeoutExpired:
                continue

    def remove(self) -> None:
        """Stop it and delete its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def fresh_database(server_uri: str, prefix: str):
    """Yield the URI of a database no other test uses, on the server at ``server_uri``; drop it afterwards."""
    name = prefix + uuid.uuid4().hex[:12]
    yield f"{server_uri}/{name}"
    client = MongoClient(server_uri)
    client.drop_database(name)
    client.close()


def database(uri: str):
    """A pymongo handle on the database named in ``uri`` (what an operator's mongosh would open)."""
    client = MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    return client.get_database(urllib.parse.urlparse(uri).path.lstrip("/") or "jobflow")
