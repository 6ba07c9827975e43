"""The test suite: ``pytest`` from the project folder (``make test``). Helpers shared by its files live in
``tests/support/``; fixtures in the ``conftest.py`` of each folder."""
