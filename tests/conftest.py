"""Fixtures: one real SecantusDB server per test session, a fresh database per test."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.support import SHARED_DATA, web
from tests.support.database import DatabaseServer, fresh_database


@pytest.fixture(scope="session")
def mongo_server():
    """A SecantusDB server on loopback for the whole session; yields its base URI."""
    server = DatabaseServer(Path(tempfile.mkdtemp(prefix="jobflow-test-db-")))
    server.start()
    yield server.base_uri
    server.remove()


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
                  "DEBUG_EMBEDDINGS": False, "DEBUG_WORKER": False, "DEBUG_QUEUE": False,
                  # Answers from the database: a test that writes straight into it reads its write back at once.
                  "READ_MODEL": False}
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


@pytest.fixture
def sign_in(client, fast_hashing):
    """Sign ``client`` in as a new user of ``role``; returns the session's CSRF token."""
    def go(role="admin", email=None, password="correct horse"):
        return web.sign_in(client, email or f"{role}@example.com", password, role)
    return go


@pytest.fixture
def admin(client, sign_in):
    """The test client, signed in as an admin; ``client.token`` is its CSRF token."""
    client.token = sign_in("admin")
    return client


@pytest.fixture
def server():
    """A loopback server speaking the OpenAI embeddings API (1536 floats, like text-embedding-3-small)."""
    from tests.support.openai_server import EmbeddingsServer
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
