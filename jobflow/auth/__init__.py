"""Admin sign-in: flask-login backed by AdminUser documents."""
from bson import ObjectId
from bson.errors import InvalidId

from ..extensions import login_manager
from ..models import AdminUser


@login_manager.user_loader
def load_user(user_id: str):
    """The signed-in admin, or None when the id no longer exists."""
    try:
        return AdminUser.objects(id=ObjectId(user_id)).first()
    except (InvalidId, TypeError):
        return None
