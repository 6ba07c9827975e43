"""The board's jobs: their reads and writes (``store.py``), the embedding queue (``queue.py``), the rollback
switch (``rollback.py``)."""
