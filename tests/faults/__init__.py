"""Fault suite: real processes (SecantusDB, gunicorn, ``flask --app app worker``, the loopback provider) hurt on purpose.

Every test asserts the end state (every job embedded once, nothing stuck, lists correct) and records what it
measured in ``/tmp/jobflow-faults/results.json`` (``JOBFLOW_FAULT_RESULTS`` overrides); ``pytest -s`` prints it.
"""
