"""An administrator of the dashboard (collection ``adminusers``)."""
import secrets

from mongoengine import DateTimeField, Document, StringField
from werkzeug.security import check_password_hash, generate_password_hash

from jobflow.timeutil import utcnow

ROLES = ("admin", "viewer")


class AdminUser(Document):
    """A person who may look at (viewer) or also act on (admin) the pipeline."""
    meta = {"collection": "adminusers", "indexes": [{"fields": ["email"], "unique": True}]}

    email = StringField(required=True)
    passwordHash = StringField(required=True)
    role = StringField(required=True, default="admin", choices=ROLES)
    createdAt = DateTimeField(default=utcnow)
    lastLoginAt = DateTimeField()
    # Part of every session of this user: a new one (sign-out, password change) ends them all.
    sessionToken = StringField()

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password``."""
        self.passwordHash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches."""
        return check_password_hash(self.passwordHash, password)

    # What Flask-Login asks of a user (its UserMixin, spelt out so the models know nothing of Flask).
    is_active = True
    is_authenticated = True
    is_anonymous = False

    @staticmethod
    def new_session_token() -> str:
        """A fresh random session token."""
        return secrets.token_urlsafe(24)

    def get_id(self) -> str:
        """What Flask-Login keeps in the session: ``<user id>:<session token>``."""
        return f"{self.id}:{self.sessionToken or ''}"

    @property
    def can_act(self) -> bool:
        """Admins may act; viewers may only look."""
        return self.role == "admin"
