"""The admin dashboard blueprint (``/admin/embeddings`` and below): thin views over ``stats`` and ``actions``."""
from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from . import views  # noqa: E402,F401  (routes register on import)
