"""Commands of the product run as processes: in the background (``Process``) or to their end (``Finished``)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import KEY, ROOT


class Process:
    """A command running in the background, its stdout and stderr in one log file.

    It runs in a process group of its own, so ``kill`` ends gunicorn's workers with their master.
    """

    def __init__(self, name: str, args: list[str], env: dict, log_path: Path, cwd: Path = ROOT):
        self.name = name
        self.args = args
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.started = time.monotonic()
        self.process = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]

    def send(self, sig: int) -> None:
        """Send ``sig`` without waiting (nothing when it has already exited)."""
        if self.alive():
            self.process.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        """The exit code; a failure naming the process and its last lines when it runs on past ``timeout``."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout}s:\n{self.tail()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` (SIGTERM: what systemd sends) and wait; the exit code."""
        self.send(sig)
        try:
            return self.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL the process and its group (teardown); nothing when it has already exited."""
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


@dataclass
class Finished:
    """A command that ran to its end: exit code, everything it printed, how long it took."""
    name: str
    returncode: int
    text: str
    seconds: float

    def output(self) -> str:
        return self.text

    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


def assert_clean_output(*processes, secrets=(KEY,)) -> None:
    """No traceback and no secret in what the processes printed."""
    for proc in processes:
        text = proc.output()
        assert "Traceback" not in text, f"{proc.name} printed a traceback:\n{text[-3000:]}"
        for secret in secrets:
            assert secret not in text, f"{proc.name} printed a secret"


# README: "Both log to stdout with timestamps, one line per event". gunicorn's own and access lines start with
# "[date]"; start-up problems and warnings with "jobflow: ".
EVENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|\[|jobflow: )")


def assert_one_line_per_event(*processes) -> None:
    """Every line the long-running processes printed is one event: timestamped (or a start-up line)."""
    for proc in processes:
        stray = [line for line in proc.output().splitlines() if line.strip() and not EVENT_LINE.match(line)]
        assert not stray, f"{proc.name} printed lines that are not one event each: {stray[:6]}"
