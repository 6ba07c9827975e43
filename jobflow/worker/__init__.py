"""The embedding worker: the loop (``loop.py``), a claimed batch (``batch.py``), the periodic jobs
(``schedule.py``) and the pacing that lets the API's reads go first (``pacing.py``)."""
