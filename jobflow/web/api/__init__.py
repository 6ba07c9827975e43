"""The JSON API (``/api``): jobs, similar jobs, health, the admin API and the OpenAPI document."""
from jobflow.web.api import admin, health, jobs, openapi, similar  # noqa: F401  (routes register on import)
from jobflow.web.api.blueprint import bp

__all__ = ["bp"]
