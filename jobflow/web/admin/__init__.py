"""The admin dashboard (``/admin/embeddings`` and below): thin views over ``jobflow.ops``."""
from jobflow.web.admin.views import bp

__all__ = ["bp"]
