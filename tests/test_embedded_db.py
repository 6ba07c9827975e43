"""The embedded database: started when MONGODB_URI is unset, reused, durable across restarts, stopped by its last user."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pymongo import MongoClient

from jobflow.db import EmbeddedServer, ping

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
def test_the_folder_of_the_unauthenticated_server_is_private(tmp_path):
    """No authentication on the embedded server: only its user may read its folder, its files and its data."""
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
        for name in ("secantus.json", "secantus.lock", "secantus.users", "secantus.log"):
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
