"""Tests for the loopback OpenAI embeddings server, driven through the real ``openai`` SDK."""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest

from tests.support.openai_server import EmbeddingsServer, count_tokens

MODEL = "text-embedding-3-small"
DIMS = 256
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server():
    """A running server with small vectors."""
    with EmbeddingsServer(dimensions=DIMS) as s:
        yield s


@pytest.fixture
def client(server):
    """Real SDK client pointed at the server, no retries."""
    c = openai.OpenAI(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    yield c
    c.close()


def embed(client, texts, **kw):
    """Embed texts and return an (n, d) float64 array."""
    resp = client.embeddings.create(input=texts, model=MODEL, **kw)
    return np.array([d.embedding for d in resp.data], dtype=np.float64)


def cos(a, b):
    """Cosine similarity."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- happy path


def test_base_url_and_response_shape(server, client):
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    resp = client.embeddings.create(input=["a b c", "d"], model=MODEL)
    assert resp.object == "list" and resp.model == MODEL
    assert [d.index for d in resp.data] == [0, 1]
    assert all(d.object == "embedding" and len(d.embedding) == DIMS for d in resp.data)
    expected = count_tokens("a b c") + count_tokens("d")
    assert expected == (3 * 4 // 3 + 1) + (1 * 4 // 3 + 1)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == expected


def test_float_and_base64_equal(client):
    texts = ["Senior Python developer", "Nurse, night shift"]
    default = embed(client, texts)  # SDK sends base64 and decodes it
    as_float = embed(client, texts, encoding_format="float")
    assert np.array_equal(default, as_float)
    raw = client.embeddings.create(input=texts, model=MODEL, encoding_format="base64")
    assert isinstance(raw.data[0].embedding, str)  # explicit base64 is left undecoded by the SDK
    decoded = np.array([np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in raw.data])
    assert np.array_equal(decoded, as_float)


def test_deterministic_across_servers_and_unit_norm(client):
    texts = ["Backend engineer (Go, Kubernetes)", "Barista"]
    first = embed(client, texts)
    assert np.array_equal(first, embed(client, texts[::-1])[::-1])
    with EmbeddingsServer(dimensions=DIMS) as other:
        c2 = openai.OpenAI(api_key=other.api_key, base_url=other.base_url, max_retries=0)
        assert np.array_equal(first, embed(c2, texts))
        c2.close()
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)


def test_similarity_is_meaningful(client):
    a, b, c, d, e = embed(
        client,
        [
            "Senior Python developer, Django and PostgreSQL, remote",
            "Python backend developer with Django experience, remote",
            "Registered nurse for hospital night shifts",
            "senior python developer, django and postgresql, remote!",  # same words, different text
            "Truck driver, CDL class A",
        ],
    )
    assert cos(a, b) > 0.4
    assert abs(cos(a, c)) < 0.2 and abs(cos(a, e)) < 0.2
    assert cos(a, b) > cos(a, c) + 0.3
    assert 0.99 < cos(a, d) < 0.99999  # near-identical but never equal
    assert not np.array_equal(a, d)


def test_dimensions_param_and_token_inputs(client):
    v = embed(client, ["python developer"], dimensions=32)
    assert v.shape == (1, 32)
    assert math.isclose(np.linalg.norm(v[0]), 1.0, rel_tol=1e-5)
    resp = client.embeddings.create(input=[[1, 2, 3], [4, 5]], model=MODEL)
    assert len(resp.data) == 2 and resp.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(input="x", model="text-embedding-ada-002", dimensions=32)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(input="x", model=MODEL, dimensions=DIMS + 1)


# --------------------------------------------------------------------------- validation


def test_validation_errors(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.embeddings.create(input="", model=MODEL)
    assert ei.value.param == "input"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(input=["ok", ""], model=MODEL)
    with pytest.raises(openai.BadRequestError, match="2048"):
        client.embeddings.create(input=["x"] * 2049, model=MODEL)
    with pytest.raises(openai.BadRequestError) as ei:  # 41 inputs x 8001 tokens > 300,000
        client.embeddings.create(input=["w " * 6000] * 41, model=MODEL)
    assert ei.value.code == "max_tokens_per_request"
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.embeddings.create(input="w " * 7000, model=MODEL)
    with pytest.raises(openai.NotFoundError) as ei:
        client.embeddings.create(input="x", model="text-embedding-9")
    assert ei.value.code == "model_not_found" and ei.value.status_code == 404


def test_auth_errors_never_echo_key(server):
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    bad = openai.OpenAI(api_key=secret, base_url=server.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        bad.embeddings.create(input="x", model=MODEL)
    err = ei.value
    assert err.status_code == 401 and err.code == "invalid_api_key" and err.type == "invalid_request_error"
    assert err.message.count("Incorrect API key provided")
    assert secret not in err.response.text and secret[:5] in err.response.text
    bad.close()

    req = urllib.request.Request(
        server.base_url + "/embeddings", data=json.dumps({"input": "x", "model": MODEL}).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as hei:
        urllib.request.urlopen(req, timeout=5)
    assert hei.value.code == 401
    assert json.loads(hei.value.read())["error"]["code"] == "invalid_api_key"


# --------------------------------------------------------------------------- faults


def test_rate_limit_then_recovers(server, client):
    server.fail_next(2, "rate_limit", retry_after=7)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as ei:
            client.embeddings.create(input="x", model=MODEL)
        assert ei.value.response.headers["retry-after"] == "7"
        assert ei.value.code == "rate_limit_exceeded"
    assert server.pending_faults == 0
    assert embed(client, ["x"]).shape == (1, DIMS)
    assert server.requests == 3 and server.embedded["x"] == 1


def test_sdk_retries_and_honours_retry_after(server):
    retrying = openai.OpenAI(api_key=server.api_key, base_url=server.base_url, max_retries=1)
    server.fail_next(1, "rate_limit", retry_after=0.3)
    t0 = time.monotonic()
    resp = retrying.embeddings.create(input="x", model=MODEL)
    assert time.monotonic() - t0 >= 0.3
    assert len(resp.data) == 1 and server.requests == 2
    retrying.close()


def test_server_error(server, client):
    server.fail_next(1, "server_error")
    with pytest.raises(openai.InternalServerError) as ei:
        client.embeddings.create(input="x", model=MODEL)
    assert ei.value.status_code == 500


def test_timeout_fault(server, client):
    server.fail_next(1, "timeout", seconds=5)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.embeddings.create(input="x", model=MODEL, timeout=0.5)
    assert time.monotonic() - t0 < 2
    assert embed(client, ["x"]).shape == (1, DIMS)  # next request is normal


def test_malformed_body_raises_json_decode_error(server, client):
    # The SDK does not wrap this: with Content-Type application/json it calls response.json()
    # and the raw json.JSONDecodeError (a ValueError) escapes, even with strict validation.
    server.fail_next(1, "malformed")
    with pytest.raises(json.JSONDecodeError):
        client.embeddings.create(input="x", model=MODEL)


def test_bad_key_and_unknown_model_faults(server, client):
    server.fail_next(1, "bad_key")
    with pytest.raises(openai.AuthenticationError) as ei:
        client.embeddings.create(input="x", model=MODEL)
    assert server.api_key not in ei.value.response.text
    server.fail_next(1, "unknown_model")
    with pytest.raises(openai.NotFoundError) as ei:
        client.embeddings.create(input="x", model=MODEL)
    assert ei.value.code == "model_not_found"


def test_data_faults_arrive_as_data(server, client):
    server.fail_next(1, "wrong_dimensions")
    v = embed(client, ["a", "b"])
    assert v.shape == (2, DIMS - 1)

    for kw in ({"encoding_format": "float"}, {}):  # JSON NaN, and float32 NaN bytes decoded by the SDK
        server.fail_next(1, "nan")
        v = embed(client, ["a", "b"], **kw)
        assert math.isnan(v[0][0]) and not np.isnan(v[1]).any()
    server.fail_next(1, "nan")
    raw = client.embeddings.create(input=["a", "b"], model=MODEL, encoding_format="base64")
    assert np.isnan(np.frombuffer(base64.b64decode(raw.data[0].embedding), "<f4")[0])

    server.fail_next(1, "zero_vector")
    v = embed(client, ["a", "b"])
    assert not v[0].any() and v[1].any()
    assert server.embedded == {"b": 4}  # corrupted vectors are not counted
    assert server.inputs_total == 10


def test_fail_always_and_clear(server, client):
    server.fail_always("server_error")
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            client.embeddings.create(input="x", model=MODEL)
    server.clear_faults()
    assert embed(client, ["x"]).shape == (1, DIMS)
    with pytest.raises(ValueError):
        server.fail_next(1, "no_such_mode")


def test_hang_does_not_block_stop():
    srv = EmbeddingsServer(dimensions=DIMS).start()
    c = openai.OpenAI(api_key=srv.api_key, base_url=srv.base_url, max_retries=0, timeout=10)
    srv.fail_next(1, "hang")
    errors: list[BaseException] = []

    def call():
        try:
            c.embeddings.create(input="x", model=MODEL)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            errors.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    deadline = time.monotonic() + 3
    while srv.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.in_flight == 1
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 1.0
    t.join(3)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], openai.APIConnectionError)
    c.close()


# --------------------------------------------------------------------------- counters


def test_counters_and_max_concurrent(server, client):
    server.latency = 0.3
    barrier = threading.Barrier(3)

    def work(i):
        barrier.wait()
        client.embeddings.create(input=[f"job {i}", "shared text"], model=MODEL)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    # The server counts right after it has sent the answer: give its threads a moment to get there.
    deadline = time.monotonic() + 2
    while server.inputs_total < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.max_concurrent == 3
    assert server.requests == 3
    assert server.inputs_total == 6
    assert server.embedded["shared text"] == 3 and server.embedded["job 0"] == 1
    assert server.tokens_total == 3 * (count_tokens("job 0") + count_tokens("shared text"))
    server.latency = 0.0
    server.reset_counters()
    assert (server.requests, server.inputs_total, server.tokens_total, server.max_concurrent) == (0, 0, 0, 0)
    assert not server.embedded


# --------------------------------------------------------------------------- CLI


def test_cli_subprocess():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_server", "--port", "0", "--latency", "0", "--dimensions", "16"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        c = openai.OpenAI(api_key="sk-test-loopback", base_url=base_url, max_retries=0)
        assert len(c.embeddings.create(input="x", model=MODEL).data[0].embedding) == 16
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
