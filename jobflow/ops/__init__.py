"""Operations on the embedding system that the pages, the API, /metrics, the CLI and the worker share.

Nothing here imports Flask: the blueprints parse requests and render what these
modules return; the worker calls them too. Every query is served by an index
and touches a bounded number of documents (``benchmarks/dashboard_bench.py``).
"""
