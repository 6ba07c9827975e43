"""A real loopback HTTP server that speaks the OpenAI embeddings API, with scriptable faults.

Meant for tests and benchmarks that must exercise the real ``openai`` SDK over real HTTP::

    with EmbeddingsServer(dimensions=256) as server:
        client = openai.OpenAI(api_key=server.api_key, base_url=server.base_url, max_retries=0)
        client.embeddings.create(input=["python developer"], model="text-embedding-3-small")
        server.fail_next(1, "rate_limit", retry_after=2)

Or as a separate process (first stdout line is the base URL; runs until SIGTERM/SIGINT)::

    python -m tests.support.openai_server --port 0 --latency 0.2 --dimensions 1536

Endpoints: ``POST /v1/embeddings`` and ``GET /v1/models``. Anything else gets OpenAI's 404
"Invalid URL" error.

Request handling follows the OpenAI API:

* ``Authorization: Bearer <api_key>`` required, else 401 ``invalid_api_key`` (key is masked).
* JSON body ``{input, model, encoding_format?, dimensions?, user?}``; unknown fields -> 400.
  ``input`` is a string, a list of strings, a token array (list of ints) or a list of token
  arrays. Empty strings/lists, more than 2048 inputs, a single input over ``max_input_tokens``
  (8192) or more than 300,000 tokens summed over the request -> 400.
* Unknown model -> 404 ``model_not_found``. ``dimensions`` must be 1..``server.dimensions`` and is
  rejected for ``text-embedding-ada-002`` (as OpenAI does). All models natively return
  ``server.dimensions`` floats.
* ``encoding_format`` ``"float"`` (the API's default when omitted) returns JSON floats;
  ``"base64"`` (what the Python SDK sends by default) returns base64 of little-endian float32.
  Float values are the float32 values, so both formats decode to exactly the same numbers.

Token counting is an approximation, not tiktoken: a string counts ``len(text.split()) * 4 // 3 + 1``
tokens; a token array counts ``len(array)`` tokens.

Vectors are deterministic and meaningful: lower-cased word tokens (``c++``, ``c#``, ``node.js``
and ``full-stack`` stay whole) and word bigrams (half weight) are feature-hashed with
``hashlib.blake2b`` into ``dimensions`` signed buckets, then a small per-text component (also
blake2b-derived, ~5% of the norm) is added so no two distinct texts share a vector, and the
result is L2-normalised. Texts sharing words have high cosine similarity, unrelated texts are
near 0, identical texts are identical across runs, processes and machines. A requested
``dimensions`` hashes directly into that many buckets (it is not a truncation of the full vector).

Faults (thread-safe, consumed only by ``POST /v1/embeddings``): ``fail_next(n, mode, **opts)``
queues ``n`` faults used by the next ``n`` requests, ahead of any ``fail_always(mode, **opts)``;
``clear_faults()`` removes both. See ``FAULT_MODES``. A fault is taken when the request arrives
(after ``latency``). "hang", "rate_limit", "server_error", "malformed" and "bad_key" answer before
auth/body validation; "timeout" delays, then the request is handled normally; "unknown_model" and
the data faults ("wrong_dimensions", "nan", "zero_vector") apply to an otherwise valid request (an
invalid one still gets its 4xx and uses the fault up).

Counters (thread-safe): ``requests`` (every HTTP request, any path), ``embedded`` (Counter of
text -> times a correct vector was returned for it; token-array inputs are keyed by a tuple of
ints; vectors corrupted by a data fault are not counted), ``inputs_total`` and ``tokens_total``
(inputs/tokens in every 200 embeddings response, i.e. what would be billed), ``max_concurrent``
(peak simultaneous in-flight embeddings requests). ``reset_counters()`` zeroes them.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import re
import signal
import socket
import sys
import threading
import time
import uuid
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable

import numpy as np

__all__ = ["EmbeddingsServer", "FAULT_MODES", "count_tokens", "embed_text", "main"]

DEFAULT_MODELS = ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")
DEFAULT_API_KEY = "sk-test-loopback"
MODELS_WITHOUT_DIMENSIONS = frozenset({"text-embedding-ada-002"})
MAX_INPUTS = 2048
MAX_TOKENS_PER_REQUEST = 300_000
MAX_INPUT_TOKENS = 8192

FAULT_MODES = frozenset(
    {
        "rate_limit",  # 429 + Retry-After (opts: retry_after=1)
        "server_error",  # 500
        "timeout",  # wait opts: seconds=30, then answer normally
        "malformed",  # 200, Content-Type application/json, body not JSON (opts: body, content_type)
        "wrong_dimensions",  # 200, every vector has dimensions-1 floats
        "nan",  # 200, first vector's first element is NaN
        "zero_vector",  # 200, first vector is all zeros
        "hang",  # read the request, never answer; closed when the server stops
        "bad_key",  # 401 invalid_api_key
        "unknown_model",  # 404 model_not_found
    }
)
_ALLOWED_FIELDS = frozenset({"input", "model", "encoding_format", "dimensions", "user"})
_TOKEN_RE = re.compile(r"\w[\w+#.\-]*[\w+#]|\w")
_NOISE_SCALE = 0.05
_BIGRAM_WEIGHT = 0.5


# --------------------------------------------------------------------------- embedding maths


def count_tokens(item: str | list[int]) -> int:
    """Approximate token count: ``len(text.split()) * 4 // 3 + 1`` for text, ``len`` for token arrays."""
    if isinstance(item, str):
        return len(item.split()) * 4 // 3 + 1
    return len(item)


@lru_cache(maxsize=200_000)
def _bucket(feature: str, dims: int) -> tuple[int, float]:
    """Stable (bucket index, sign) for a feature string."""
    h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return h % dims, (1.0 if (h >> 63) & 1 else -1.0)


def _noise(key: bytes, dims: int) -> np.ndarray:
    """Deterministic pseudo-random unit vector derived from ``key`` with blake2b in counter mode."""
    seed = hashlib.blake2b(key, digest_size=32, person=b"jf-noise").digest()
    blocks = [hashlib.blake2b(seed + i.to_bytes(4, "little"), digest_size=64).digest() for i in range(-(-dims // 64))]
    vec = np.frombuffer(b"".join(blocks)[:dims], dtype=np.int8).astype(np.float64) + 0.5
    return vec / np.linalg.norm(vec)


def embed_text(item: str | Iterable[int], dims: int) -> np.ndarray:
    """Deterministic, L2-normalised float32 embedding of a text (or token array) with ``dims`` entries."""
    if isinstance(item, str):
        words = _TOKEN_RE.findall(item.lower())
        key = b"s:" + item.encode("utf-8", "surrogatepass")
    else:
        tokens = list(item)
        words = [f"<tok{t}>" for t in tokens]
        key = b"t:" + ",".join(map(str, tokens)).encode()
    vec = np.zeros(dims, dtype=np.float64)
    for w in words:
        i, s = _bucket("u:" + w, dims)
        vec[i] += s
    for a, b in zip(words, words[1:]):
        i, s = _bucket(f"b:{a} {b}", dims)
        vec[i] += s * _BIGRAM_WEIGHT
    norm = np.linalg.norm(vec)
    if norm > 0:
        vec /= norm
    vec += _NOISE_SCALE * _noise(key, dims)
    vec /= np.linalg.norm(vec)
    return vec.astype(np.float32)


def _mask_key(key: str) -> str:
    """Mask an API key the way OpenAI does in error messages (never the full key)."""
    if len(key) >= 16:
        return key[:5] + "*" * (len(key) - 9) + key[-4:]
    return key[:2] + "*" * max(len(key) - 2, 4)


def _error(message: str, type_: str = "invalid_request_error", param: Any = None, code: Any = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _invalid_key_body(key: str | None) -> dict:
    if not key:
        msg = (
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        msg = (
            f"Incorrect API key provided: {_mask_key(key)}. "
            "You can find your API key at https://platform.openai.com/account/api-keys."
        )
    return _error(msg, code="invalid_api_key")


def _model_not_found_body(model: str) -> dict:
    return _error(
        f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
    )


class _BadRequest(Exception):
    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


# --------------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: "EmbeddingsServer"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that went away (timeouts, hangs, shutdown)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "openai-loopback/1.0"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._unregister(self.connection)

    def handle_one_request(self) -> None:
        if self.server.owner._stop_event.is_set():
            self.close_connection = True
            return
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.owner.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))

    def do_POST(self) -> None:
        """Dispatch POST requests."""
        self.server.owner._handle(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

    # helpers used by EmbeddingsServer._handle
    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex)
        self.send_header("openai-version", "2020-10-01")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self.send(status, json.dumps(obj, allow_nan=True).encode(), headers=headers)


# --------------------------------------------------------------------------- public server


class EmbeddingsServer:
    """Loopback OpenAI-compatible embeddings server with scriptable faults and counters."""

    def __init__(
        self,
        dimensions: int = 1536,
        latency: float = 0.0,
        api_key: str = DEFAULT_API_KEY,
        models: Iterable[str] = DEFAULT_MODELS,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_input_tokens: int = MAX_INPUT_TOKENS,
        verbose: bool = False,
    ) -> None:
        """Configure the server; call ``start()`` (or use ``with``) to serve."""
        if dimensions < 2:
            raise ValueError("dimensions must be >= 2")
        self.dimensions = int(dimensions)
        self.latency = float(latency)
        self.api_key = api_key
        self.models = tuple(models)
        self.host = host
        self.max_input_tokens = max_input_tokens
        self.verbose = verbose
        self._requested_port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._fault_lock = threading.Lock()
        self._fault_queue: collections.deque[tuple[str, dict]] = collections.deque()
        self._fault_always: tuple[str, dict] | None = None
        self._stats_lock = threading.Lock()
        self._init_counters()

    # ---- lifecycle

    def start(self) -> "EmbeddingsServer":
        """Bind ``host`` on a free (or the given) port and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stop_event = threading.Event()
        httpd = _HTTPServer((self.host, self._requested_port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="EmbeddingsServer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes hung/delayed requests and closes open connections. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stop_event.set()
        httpd.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "EmbeddingsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (only while running)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)``, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def _register(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)
        if self._stop_event.is_set():  # raced with stop(): make sure it does not linger
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _unregister(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    # ---- faults

    def fail_next(self, n: int, mode: str, **opts: Any) -> None:
        """Queue ``n`` faults of ``mode`` for the next ``n`` embeddings requests."""
        self._check_mode(mode)
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._fault_lock:
            self._fault_queue.extend((mode, dict(opts)) for _ in range(n))

    def fail_always(self, mode: str, **opts: Any) -> None:
        """Apply ``mode`` to every embeddings request (after any queued ``fail_next`` faults)."""
        self._check_mode(mode)
        with self._fault_lock:
            self._fault_always = (mode, dict(opts))

    def clear_faults(self) -> None:
        """Drop queued and persistent faults."""
        with self._fault_lock:
            self._fault_queue.clear()
            self._fault_always = None

    @property
    def pending_faults(self) -> int:
        """Number of queued ``fail_next`` faults not yet consumed."""
        with self._fault_lock:
            return len(self._fault_queue)

    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {sorted(FAULT_MODES)}")

    def _take_fault(self) -> tuple[str, dict] | None:
        with self._fault_lock:
            if self._fault_queue:
                return self._fault_queue.popleft()
            return self._fault_always

    # ---- counters

    def _init_counters(self) -> None:
        self._requests = 0
        self._embedded: collections.Counter = collections.Counter()
        self._inputs_total = 0
        self._tokens_total = 0
        self._in_flight = 0
        self._max_concurrent = 0

    def reset_counters(self) -> None:
        """Zero all counters (``max_concurrent`` restarts from the current in-flight count)."""
        with self._stats_lock:
            in_flight = self._in_flight
            self._init_counters()
            self._in_flight = in_flight
            self._max_concurrent = in_flight

    @property
    def requests(self) -> int:
        """Total HTTP requests received (any method, path or outcome)."""
        with self._stats_lock:
            return self._requests

    @property
    def embedded(self) -> collections.Counter:
        """Snapshot Counter: input text -> times a correct vector was returned for it."""
        with self._stats_lock:
            return collections.Counter(self._embedded)

    @property
    def inputs_total(self) -> int:
        """Inputs in all 200 embeddings responses."""
        with self._stats_lock:
            return self._inputs_total

    @property
    def tokens_total(self) -> int:
        """Approximate tokens (see ``count_tokens``) in all 200 embeddings responses."""
        with self._stats_lock:
            return self._tokens_total

    @property
    def max_concurrent(self) -> int:
        """Peak number of simultaneously in-flight embeddings requests."""
        with self._stats_lock:
            return self._max_concurrent

    @property
    def in_flight(self) -> int:
        """Embeddings requests currently being handled."""
        with self._stats_lock:
            return self._in_flight

    # ---- request handling

    def _handle(self, h: _Handler) -> None:
        with self._stats_lock:
            self._requests += 1
        path = h.path.split("?", 1)[0].rstrip("/")
        body = h.read_body()
        if h.command == "POST" and path == "/v1/embeddings":
            with self._stats_lock:
                self._in_flight += 1
                self._max_concurrent = max(self._max_concurrent, self._in_flight)
            try:
                self._handle_embeddings(h, body)
            finally:
                with self._stats_lock:
                    self._in_flight -= 1
            return
        if not self._authorized(h):
            h.send_json(401, _invalid_key_body(self._presented_key(h)))
        elif h.command == "GET" and path == "/v1/models":
            created = 1_700_000_000
            data = [{"id": m, "object": "model", "created": created, "owned_by": "system"} for m in self.models]
            h.send_json(200, {"object": "list", "data": data})
        else:
            h.send_json(404, _error(f"Invalid URL ({h.command} {h.path})"))

    @staticmethod
    def _presented_key(h: _Handler) -> str | None:
        auth = h.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        return key.strip() if scheme.lower() == "bearer" and key.strip() else (auth.strip() or None)

    def _authorized(self, h: _Handler) -> bool:
        auth = h.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        return scheme.lower() == "bearer" and key.strip() == self.api_key

    def _handle_embeddings(self, h: _Handler, raw: bytes) -> None:
        stop = self._stop_event
        if self.latency > 0 and stop.wait(self.latency):
            h.close_connection = True
            return
        fault = self._take_fault()
        mode, opts = fault if fault else (None, {})

        if mode == "hang":
            stop.wait()
            h.close_connection = True
            return
        if mode == "timeout":
            if stop.wait(float(opts.get("seconds", 30))):
                h.close_connection = True
                return
        elif mode == "rate_limit":
            retry_after = opts.get("retry_after", 1)
            ra = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            msg = (
                "Rate limit reached for text-embedding-3-small in organization org-loopback on tokens per min "
                f"(TPM): Limit 1000000, Used 1000000, Requested 1. Please try again in {ra}s. "
                "Visit https://platform.openai.com/account/rate-limits to learn more."
            )
            headers = {"Retry-After": ra, "x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "0"}
            h.send_json(429, _error(msg, type_="tokens", code="rate_limit_exceeded"), headers=headers)
            return
        elif mode == "server_error":
            msg = "The server had an error while processing your request. Sorry about that!"
            h.send_json(500, _error(msg, type_="server_error"))
            return
        elif mode == "malformed":
            body = opts.get("body", b'{"object": "list", "data": [{"object": "embedding", "index": 0, "embedd')
            h.send(200, body if isinstance(body, bytes) else str(body).encode(), opts.get("content_type", "application/json"))
            return
        elif mode == "bad_key":
            h.send_json(401, _invalid_key_body(self._presented_key(h) or "sk-invalid-key"))
            return

        if not self._authorized(h):
            h.send_json(401, _invalid_key_body(self._presented_key(h)))
            return
        try:
            req = self._parse_request(raw)
            if mode == "unknown_model":
                raise _BadRequest(404, _model_not_found_body(req["model"]))
        except _BadRequest as e:
            h.send_json(e.status, e.body)
            return
        self._respond_embeddings(h, req, mode)

    def _parse_request(self, raw: bytes) -> dict:
        """Validate an embeddings request body like OpenAI does; raise ``_BadRequest`` on error."""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest(
                400,
                _error(
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was "
                    "not valid JSON. If you have trouble figuring out how to fix this, please contact us through "
                    "our help center at help.openai.com.)"
                ),
            ) from None
        if not isinstance(body, dict):
            raise _BadRequest(400, _error("Invalid request body: expected a JSON object."))
        extra = sorted(set(body) - _ALLOWED_FIELDS)
        if extra:
            raise _BadRequest(400, _error(f"Unrecognized request argument supplied: {extra[0]}"))
        model = body.get("model")
        if not model or not isinstance(model, str):
            raise _BadRequest(400, _error("you must provide a model parameter", param="model"))
        if model not in self.models:
            raise _BadRequest(404, _model_not_found_body(model))

        items = self._parse_input(body.get("input"))
        tokens = [count_tokens(x) for x in items]
        for n in tokens:
            if n > self.max_input_tokens:
                raise _BadRequest(
                    400,
                    _error(
                        f"This model's maximum context length is {self.max_input_tokens} tokens, however you "
                        f"requested {n} tokens ({n} in your prompt; 0 for the completion). "
                        "Please reduce your prompt; or completion length."
                    ),
                )
        total = sum(tokens)
        if total > MAX_TOKENS_PER_REQUEST:
            raise _BadRequest(
                400,
                _error(
                    f"Requested {total} tokens, max {MAX_TOKENS_PER_REQUEST} tokens per request",
                    type_="max_tokens_per_request",
                    code="max_tokens_per_request",
                ),
            )

        fmt = body.get("encoding_format")
        if fmt is None:
            fmt = "float"
        if fmt not in ("float", "base64"):
            raise _BadRequest(
                400,
                _error(f"{fmt!r} is not one of ['float', 'base64'] - 'encoding_format'", param="encoding_format"),
            )

        dims = body.get("dimensions")
        if dims is None:
            dims = self.dimensions
        else:
            if model in MODELS_WITHOUT_DIMENSIONS:
                raise _BadRequest(400, _error("This model does not support specifying dimensions.", param="dimensions"))
            if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= self.dimensions:
                raise _BadRequest(
                    400,
                    _error(
                        f"Invalid value for 'dimensions' = {dims}. Must be an integer between 1 and {self.dimensions}.",
                        param="dimensions",
                    ),
                )
        return {"model": model, "items": items, "tokens": tokens, "format": fmt, "dims": dims}

    @staticmethod
    def _parse_input(value: Any) -> list:
        """Normalise ``input`` to a list of strings or token arrays."""

        def invalid(detail: str = "") -> _BadRequest:
            msg = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
            return _BadRequest(400, _error(msg + (f" ({detail})" if detail else ""), param="input"))

        def is_tok(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool) and x >= 0

        if value is None:
            raise _BadRequest(400, _error("you must provide an input parameter", param="input"))
        if isinstance(value, str):
            items: list = [value]
        elif isinstance(value, list) and value and all(isinstance(x, str) for x in value):
            items = list(value)
        elif isinstance(value, list) and value and all(is_tok(x) for x in value):
            items = [list(value)]
        elif isinstance(value, list) and value and all(isinstance(x, list) and x and all(map(is_tok, x)) for x in value):
            items = [list(x) for x in value]
        else:
            raise invalid("expected a string, a list of strings, a token array or a list of token arrays")
        if len(items) > MAX_INPUTS:
            raise _BadRequest(
                400,
                _error(f"Too many inputs. The max number of inputs is {MAX_INPUTS}. Received {len(items)}.", param="input"),
            )
        if any(isinstance(x, str) and x == "" for x in items):
            raise invalid("input cannot be an empty string")
        return items

    def _respond_embeddings(self, h: _Handler, req: dict, mode: str | None) -> None:
        items, dims = req["items"], req["dims"]
        out_dims = dims - 1 if mode == "wrong_dimensions" else dims
        vectors = [embed_text(x, out_dims) for x in items]
        good = [mode != "wrong_dimensions"] * len(items)  # which inputs got a correct vector
        if mode == "nan":
            vectors[0] = vectors[0].copy()
            vectors[0][0] = np.float32("nan")
            good[0] = False
        elif mode == "zero_vector":
            vectors[0] = np.zeros(out_dims, dtype=np.float32)
            good[0] = False

        if req["format"] == "base64":
            enc = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            enc = [v.tolist() for v in vectors]
        n_tokens = sum(req["tokens"])
        payload = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(enc)],
            "model": req["model"],
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }
        h.send_json(200, payload, headers={"openai-model": req["model"], "openai-processing-ms": "1"})
        with self._stats_lock:
            self._inputs_total += len(items)
            self._tokens_total += n_tokens
            for item, ok in zip(items, good):
                if ok:
                    self._embedded[item if isinstance(item, str) else tuple(item)] += 1


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """CLI: print the base URL on the first stdout line, then serve until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m tests.support.openai_server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds to sleep per embeddings request")
    p.add_argument("--dimensions", type=int, default=1536)
    p.add_argument("--api-key", default=DEFAULT_API_KEY)
    p.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = p.parse_args(argv)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    server = EmbeddingsServer(
        dimensions=args.dimensions, latency=args.latency, api_key=args.api_key,
        host=args.host, port=args.port, verbose=args.verbose,
    )
    server.start()
    try:
        print(server.base_url, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
