"""The README's reverse proxy, outside in: Debian's nginx with the README's server block in front of
``gunicorn -c gunicorn.conf.py``. Only what a deployment must change is changed: the two ``listen`` ports, the
certificate's paths and the upstream port.

Slow clients (connections that never finish their headers) hold gunicorn's threads (2 processes x 4) when they
reach it directly; nginx reads each request whole before it passes it on, so with 50 of them connected to nginx
the health endpoint still answers through it.
"""
from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from contextlib import ExitStack

import pytest

from jobflow.db import free_port
from tests.support.waiting import wait_until
from tests.support.web import http_get

from .conftest import GUNICORN, README, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

NGINX = "/usr/sbin/nginx"
TOKEN = "acc-proxy-token-5d1e7b20"
SECRET_KEY = "acc-proxy-secret-0c8a4f-62d9e1b7a3c5f0"
HOST = "jobs.example.com"
SLOW_CLIENTS = 50


def readme_server_block(http_port: int, https_port: int, upstream: int, cert, key) -> str:
    """The README's nginx block with its ports and certificate paths replaced (each exactly once)."""
    block = re.search(r"```nginx\n(.*?)```", README, re.S).group(1)
    for old, new in ((r"listen 80;", f"listen 127.0.0.1:{http_port};"),
                     (r"listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
                     (r"/etc/letsencrypt/live/jobs\.example\.com/fullchain\.pem", str(cert)),
                     (r"/etc/letsencrypt/live/jobs\.example\.com/privkey\.pem", str(key)),
                     (r"proxy_pass http://127\.0\.0\.1:5001;", f"proxy_pass http://127.0.0.1:{upstream};")):
        block, count = re.subn(old, new, block)
        assert count == 1, f"the README's nginx block no longer has {old!r}"
    return block


def start_nginx(folder, server_block: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'};\n"
        + "events { worker_connections 1024; }\n"
        + f"http {{\n    access_log off;\n{temp}\n{server_block}\n}}\n")
    return subprocess.Popen([NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "stderr.log", "wb"))


def https_get(port: int, path: str, timeout: float) -> tuple[int, str, dict]:
    context = ssl._create_unverified_context()       # the test's own self-signed certificate
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    try:
        conn.request("GET", path, headers={"Host": HOST})
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        conn.close()


def slow_client(stack: ExitStack, port: int, tls: bool) -> None:
    """A connection that sends part of its request headers and then nothing (a slowloris client)."""
    sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
    if tls:
        sock = stack.enter_context(ssl._create_unverified_context().wrap_socket(sock, server_hostname=HOST))
    sock.sendall(f"GET /api/jobs HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ".encode())


def answers_within(get, seconds: float, tries: int = 5) -> list[float]:
    """Ask up to ``tries`` times; the elapsed times, the last one under ``seconds`` when it answered in time."""
    times = []
    for _ in range(tries):
        started = time.monotonic()
        try:
            answered = get(seconds)
        except (OSError, http.client.HTTPException):
            answered = False
        times.append(time.monotonic() - started)
        if answered and times[-1] < seconds:
            break
    return times


def health_json(status: int, body: str, headers: dict) -> bool:
    """An answer of the product's health endpoint (200 or 503 with its JSON), not one of nginx."""
    return status in (200, 503) and "json" in headers.get("Content-Type", "") and '"status"' in body


@pytest.mark.skipif(not os.path.exists(NGINX), reason="Debian's nginx is installed by scripts/install-nginx")
def test_behind_the_readme_nginx_slow_clients_do_not_stop_health(tmp_path, db_uri):
    web_port, http_port, https_port = free_port(), free_port(), free_port()
    product = Product(tmp_path / "jobflow")
    product.write_env({"MONGODB_URI": db_uri, "PORT": web_port, "HOST": "127.0.0.1", "DEMO_DATA": "false",
                       "EMBEDDING_PROVIDER": "local", "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY,
                       "TRUSTED_PROXIES": 1, "PUBLIC_BASE_URL": f"https://{HOST}"})
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}",
                    "-keyout", str(certs / "privkey.pem"), "-out", str(certs / "fullchain.pem")],
                   check=True, capture_output=True)
    nginx = None
    try:
        web = product.start("gunicorn", GUNICORN)
        wait_until("gunicorn to answer", lambda: http_get(f"http://127.0.0.1:{web_port}/api/jobs")[0] == 200, 90,
                   processes=[web])
        nginx = start_nginx(tmp_path / "nginx", readme_server_block(http_port, https_port, web_port,
                                                                    certs / "fullchain.pem", certs / "privkey.pem"))
        health = wait_until("health through nginx", lambda: (lambda a: health_json(*a) and a)(
            https_get(https_port, "/api/health/embeddings", 10)), 60)
        assert health[2].get("Server") == "nginx", health[2]            # server_tokens off: no version
        assert "Strict-Transport-Security" in health[2]                  # X-Forwarded-Proto https reached the app
        redirect = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        redirect.request("GET", "/api/jobs", headers={"Host": HOST})
        answer = redirect.getresponse()
        assert answer.status == 301 and answer.getheader("Location") == f"https://{HOST}/api/jobs"

        with ExitStack() as slow:
            for _ in range(SLOW_CLIENTS):
                slow_client(slow, https_port, tls=True)
            through_nginx = answers_within(lambda t: health_json(*https_get(https_port, "/api/health/embeddings", t)), 1.0)
            assert through_nginx[-1] < 1.0, f"health through nginx with {SLOW_CLIENTS} slow clients: {through_nginx}"
        print(f"\nPROXY RESULT: health through nginx with {SLOW_CLIENTS} slow clients answered in "
              f"{through_nginx[-1] * 1000:.0f} ms (attempts: {[round(t, 2) for t in through_nginx]})")

        # The same clients straight at gunicorn hold every thread: what the proxy is there for.
        with ExitStack() as slow:
            for _ in range(SLOW_CLIENTS):
                slow_client(slow, web_port, tls=False)
            direct = answers_within(lambda t: health_json(*(lambda a: (a[0], str(a[1]), a[3]))(
                http_get(f"http://127.0.0.1:{web_port}/api/health/embeddings", t))), 3.0, tries=1)
            assert direct[-1] >= 3.0, f"gunicorn answered despite {SLOW_CLIENTS} slow clients: {direct}"
        wait_until("gunicorn to answer again once the slow clients left",
                   lambda: http_get(f"http://127.0.0.1:{web_port}/api/jobs")[0] == 200, 90, processes=[web])
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(15)
            except subprocess.TimeoutExpired:
                nginx.kill()
        product.stop_all()
