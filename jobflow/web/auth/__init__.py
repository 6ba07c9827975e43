"""Sign-in pages: ``/login`` and ``/logout``."""
from jobflow.web.auth.views import bp

__all__ = ["bp"]
