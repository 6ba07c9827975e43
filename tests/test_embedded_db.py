"""The embedded database: started when MONGODB_URI is unset, reused, durable across restarts, locked with a generated
password, stopped by its last user, or by its own watchdog when that one crashed."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from jobflow.db import EmbeddedServer, free_port, ping
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent

ENSURE = """
import sys, json
from jobflow.db import EmbeddedServer
server = EmbeddedServer({data!r})
uri = server.ensure()
print(json.dumps({{"uri": uri, "started": server.process is not None}}), flush=True)
sys.stdin.readline()  # hold the server (if we started it) until told to go
"""


@pytest.mark.slow
def test_restart_keeps_data(tmp_path):
    server = EmbeddedServer(tmp_path / "secantus")
    uri = server.ensure()
    client = MongoClient(uri)
    client.jobflow.jobs.insert_one({"title": "Kept across restarts"})
    client.close()
    assert server.release()                      # the only user: stopping it stops the server
    assert not ping(uri, 300)
    again = EmbeddedServer(tmp_path / "secantus")
    uri2 = again.ensure()
    try:
        assert uri2 == uri                       # same port: clients of the old one reconnect to the new one
        assert MongoClient(uri2).jobflow.jobs.find_one()["title"] == "Kept across restarts"
    finally:
        again.stop()


@pytest.mark.slow
def test_two_starts_share_one_server(tmp_path):
    data = str(tmp_path / "secantus")
    procs = [subprocess.Popen([sys.executable, "-c", ENSURE.format(data=data)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        answers = [json.loads(p.stdout.readline()) for p in procs]
        assert answers[0]["uri"] == answers[1]["uri"]           # one server for the folder
        assert sorted(a["started"] for a in answers) == [False, True]  # one started it, one reused it
        client = MongoClient(answers[0]["uri"])
        client.jobflow.jobs.insert_one({"title": "shared"})
        assert client.jobflow.jobs.count_documents({}) == 1
        client.close()
        starter = procs[[a["started"] for a in answers].index(True)]
        other = procs[[a["started"] for a in answers].index(False)]
        _leave(starter)
        assert ping(answers[0]["uri"], 1500)    # the other still uses it: it keeps running (nothing stranded)
        _leave(other)
        assert not ping(answers[0]["uri"], 300)  # the last one out stopped it
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def _leave(process) -> None:
    process.stdin.write("\n")
    process.stdin.flush()
    assert process.wait(30) == 0


@pytest.mark.slow
def test_killed_user_does_not_keep_it_running(tmp_path):
    """A user that dies without cleaning up (SIGKILL) drops out: the last one left still stops the server."""
    data = str(tmp_path / "secantus")
    first = subprocess.Popen([sys.executable, "-c", ENSURE.format(data=data)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    uri = json.loads(first.stdout.readline())["uri"]
    second = subprocess.Popen([sys.executable, "-c", ENSURE.format(data=data)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(second.stdout.readline())["uri"] == uri
        second.kill()
        second.wait(10)
        assert ping(uri, 1500)
        _leave(first)
        assert not ping(uri, 300)
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
                p.wait(10)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.slow
def test_the_folder_of_the_server_is_private(tmp_path):
    """Only its user may read its folder, its files (the password among them) and its data."""
    instance = tmp_path / "instance"
    instance.mkdir()
    old = os.umask(0o022)                    # the usual umask: folders 755, files 644 unless told otherwise
    try:
        os.chmod(instance, 0o755)
        for name in ("secantus.log", "secantus.users", "secantus.lock"):   # left by an older version
            (instance / name).write_text("")
            os.chmod(instance / name, 0o644)
        server = EmbeddedServer(instance / "secantus")
        uri = server.ensure()
    finally:
        os.umask(old)
    try:
        MongoClient(uri).jobflow.jobs.insert_one({"title": "private"})
        assert _mode(instance) == 0o700 and _mode(instance / "secantus") == 0o700
        for name in ("secantus.json", "secantus.lock", "secantus.users", "secantus.log", "secantus.auth"):
            assert _mode(instance / name) == 0o600, name
        data = [p for p in (instance / "secantus").rglob("*") if p.is_file()]
        assert data and all(_mode(p) & 0o077 == 0 for p in data)     # the server writes with umask 077
    finally:
        server.stop()
    assert _mode(instance / "secantus.json") == 0o600                # rewritten at stop, still private


def test_an_existing_state_file_others_can_read_is_made_private(tmp_path):
    instance = tmp_path / "instance"
    (instance / "secantus").mkdir(parents=True)
    os.chmod(instance, 0o755)
    os.chmod(instance / "secantus", 0o755)
    (instance / "secantus.json").write_text('{"port": 1}')
    os.chmod(instance / "secantus.json", 0o644)
    server = EmbeddedServer(instance / "secantus")
    with server._locked():                   # what every ensure, restart and release goes through first
        pass
    assert _mode(instance) == 0o700 and _mode(instance / "secantus") == 0o700
    assert _mode(instance / "secantus.json") == 0o600 and _mode(instance / "secantus.lock") == 0o600


def _open_uri(uri: str) -> str:
    """The same server and database, without the user and password."""
    return "mongodb://" + uri.split("@", 1)[1].split("?", 1)[0]


@pytest.mark.slow
def test_the_server_requires_the_generated_password(tmp_path):
    """A local user who finds the port reads and writes nothing without the password kept in instance/ (0600)."""
    instance = tmp_path / "instance"
    server = EmbeddedServer(instance / "secantus")
    uri = server.ensure()
    try:
        saved = json.loads((instance / "secantus.auth").read_text())
        assert len(saved["password"]) >= 32 and saved["password"] in uri
        assert _mode(instance / "secantus.auth") == 0o600
        MongoClient(uri).jobflow.jobs.insert_one({"title": "locked"})
        anonymous = MongoClient(_open_uri(uri), serverSelectionTimeoutMS=3000)
        for attempt in (lambda: anonymous.jobflow.jobs.find_one(), lambda: anonymous.admin.command("usersInfo"),
                        lambda: anonymous.jobflow.adminusers.insert_one({"email": "intruder@example.com"})):
            with pytest.raises(OperationFailure) as refused:
                attempt()
            assert refused.value.code == 13 or "authentication" in str(refused.value)
        wrong = MongoClient(uri.replace(saved["password"], "x" * 43), serverSelectionTimeoutMS=3000)
        with pytest.raises(OperationFailure):
            wrong.jobflow.jobs.find_one()
        assert MongoClient(uri).jobflow.jobs.count_documents({}) == 1
        assert saved["password"] not in (instance / "secantus.log").read_text()
    finally:
        server.stop()


@pytest.mark.slow
def test_a_folder_an_older_version_ran_without_a_password_is_upgraded_in_place(tmp_path):
    """An older version's open server, still running with nobody using it: restarted with the password, data kept."""
    instance = tmp_path / "instance"
    data = instance / "secantus"
    data.mkdir(parents=True)
    port = free_port()
    old = subprocess.Popen([sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
                            "--storage-path", str(data), "--log-level", "WARNING"], start_new_session=True)
    try:
        wait_until("the old server answers", lambda: ping(f"mongodb://127.0.0.1:{port}", 300), 30)
        with MongoClient(f"mongodb://127.0.0.1:{port}") as client:      # closed: a live connection keeps the port
            client.jobflow.jobs.insert_one({"title": "from the old version"})
        (instance / "secantus.json").write_text(json.dumps({"pid": old.pid, "port": port}))   # what it wrote
        server = EmbeddedServer(data)
        uri = server.ensure()
        try:
            assert old.wait(30) is not None                        # the open server was stopped ...
            assert server.port == port                            # ... and started again on its port
            assert MongoClient(uri).jobflow.jobs.find_one()["title"] == "from the old version"
            with pytest.raises(OperationFailure):
                MongoClient(_open_uri(uri), serverSelectionTimeoutMS=3000).jobflow.jobs.find_one()
        finally:
            server.stop()
    finally:
        if old.poll() is None:
            old.kill()
            old.wait(10)


@pytest.mark.slow
def test_the_server_stops_by_itself_once_its_last_user_was_killed(tmp_path):
    """kill -9 of the only process using it: no exit handler runs, yet the server stops within seconds."""
    data = tmp_path / "instance" / "secantus"
    user = subprocess.Popen([sys.executable, "-c", ENSURE.format(data=str(data))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        uri = json.loads(user.stdout.readline())["uri"]
        pid = json.loads((data.parent / "secantus.json").read_text())["pid"]
        assert psutil.Process(pid).ppid() == user.pid
        user.kill()
        user.wait(10)
        wait_until("the orphaned server to stop", lambda: not psutil.pid_exists(pid)
                   or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30)
        assert not ping(_open_uri(uri), 300)
        state = json.loads((data.parent / "secantus.json").read_text())
        assert "pid" not in state and state["port"] == int(uri.split(":")[3].split("/")[0])   # its port kept
        again = EmbeddedServer(data)
        assert again.ensure() == uri                              # the next start uses it again
        again.stop()
    finally:
        if user.poll() is None:
            user.kill()
            user.wait(10)
