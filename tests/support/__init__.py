"""What the tests share, defined once.

- ``processes``: a command of the product in the background (``Process``), one that ran to its end
  (``Finished``), and checks on what they printed.
- ``database``: a SecantusDB server of its own (``DatabaseServer``) and a fresh database on it.
- ``waiting``: ``wait_until``, the one way a test waits for a condition.
- ``seeding``: jobs, queue items and posting files to start from.
- ``mail``: a real SMTP server on loopback and its inbox.
- ``web``: signing in (test client, HTTP, browser page), JSON calls, the Prometheus text.
- ``workers``: worker settings, queue and list checks of the worker-process and fault suites.
- ``openai_server``: an HTTP server on loopback that speaks the OpenAI embeddings API
  (``python -m tests.support.openai_server --help``).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHARED_DATA = ROOT.parent / "shared" / "data"
KEY = "sk-test-loopback"   # the API key tests give the loopback provider; never printed by the product
