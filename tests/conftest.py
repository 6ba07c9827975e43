"""Fixtures: one real SecantusDB server per test session, a fresh database per test."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from jobflow.db import free_port, ping  # noqa: E402


@pytest.fixture(scope="session")
def mongo_server():
    """A SecantusDB server on loopback for the whole session; yields its base URI."""
    data_dir = tempfile.mkdtemp(prefix="jobflow-test-db-")
    port = free_port()
    log = open(Path(data_dir) / "server.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
                                "--storage-path", str(Path(data_dir) / "data"), "--log-level", "WARNING"],
                               stdout=log, stderr=subprocess.STDOUT)
    uri = f"mongodb://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not ping(uri, 500):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the test database server did not start; see " + str(Path(data_dir) / "server.log"))
        time.sleep(0.1)
    yield uri
    # SecantusDB now and then misses the first SIGTERM (its main thread is waiting): ask again, then kill.
    for stop in (process.terminate, process.terminate, process.kill):
        stop()
        try:
            process.wait(10)
            break
        except subprocess.TimeoutExpired:
            continue
    log.close()
    shutil.rmtree(data_dir, ignore_errors=True)


def fresh_database(mongo_server: str, prefix: str):
    """Yield the URI of a database no other test uses, on the session's server; drop it afterwards."""
    from pymongo import MongoClient
    name = prefix + uuid.uuid4().hex[:12]
    yield f"{mongo_server}/{name}"
    client = MongoClient(mongo_server)
    client.drop_database(name)
    client.close()


@pytest.fixture
def db_uri(mongo_server):
    """The URI of a database no other test uses; dropped afterwards."""
    yield from fresh_database(mongo_server, "t_")


@pytest.fixture
def make_app(db_uri, tmp_path):
    """Build apps from the factory against the test database."""
    from jobflow import create_app

    def make(**overrides):
        config = {"TESTING": True, "MONGODB_URI": db_uri, "INSTANCE_PATH": str(tmp_path / "instance"),
                  "EMBEDDING_PROVIDER": "local", "OPENAI_API_KEY": "", "SECRET_KEY": "test-secret",
                  "ADMIN_API_TOKEN": "test-token", "WTF_CSRF_ENABLED": True, "DEMO_DATA": False,
                  "DEBUG_EMBEDDINGS": False, "DEBUG_WORKER": False, "DEBUG_QUEUE": False}
        config.update(overrides)
        return create_app(config)
    return make


@pytest.fixture
def app(make_app):
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth_headers():
    return {"Authorization": "Bearer test-token"}


@pytest.fixture
def fast_hashing(monkeypatch):
    """Cheap password hashes in tests (production keeps werkzeug's scrypt default)."""
    from functools import partial

    from werkzeug.security import generate_password_hash
    fast = partial(generate_password_hash, method="pbkdf2:sha256:1000")
    monkeypatch.setattr("jobflow.models.user.generate_password_hash", fast)
    monkeypatch.setattr("jobflow.ops.users._DUMMY_HASH", fast("not-a-real-password"))


def csrf_from(html: str) -> str:
    """The csrf_token of the first form in a page."""
    import re
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


@pytest.fixture
def sign_in(client, fast_hashing):
    """Sign ``client`` in as a new user of ``role``; returns the session's CSRF token."""
    from jobflow.ops.users import create_user

    def go(role="admin", email=None, password="correct horse"):
        email = email or f"{role}@example.com"
        create_user(email, password, role)
        token = csrf_from(client.get("/login").get_data(as_text=True))
        response = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
        assert response.status_code == 302, response.get_data(as_text=True)
        return token
    return go


@pytest.fixture
def admin(client, sign_in):
    """The test client, signed in as an admin; ``client.token`` is its CSRF token."""
    client.token = sign_in("admin")
    return client


@pytest.fixture
def server():
    """A loopback server speaking the OpenAI embeddings API (1536 floats, like text-embedding-3-small)."""
    from devtools.openai_server import EmbeddingsServer
    with EmbeddingsServer() as s:
        yield s


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``shared_data`` with a reason when ../shared/data is absent."""
    if SHARED_DATA.exists():
        return
    skip = pytest.mark.skip(reason=f"{SHARED_DATA} is absent")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)
