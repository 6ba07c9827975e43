"""Admin users: create, change, authenticate. Passwords are stored only as salted hashes.

Every session carries the user's ``sessionToken`` (``AdminUser.get_id``); signing
out or changing the password draws a new one, which ends every session of that user.
"""
from __future__ import annotations

import hmac
import re

from bson import ObjectId
from bson.errors import InvalidId
from mongoengine.errors import NotUniqueError
from werkzeug.security import check_password_hash, generate_password_hash
from zxcvbn import zxcvbn

from jobflow.models import AdminUser
from jobflow.models.user import ROLES
from jobflow.timeutil import utcnow

MIN_PASSWORD_LENGTH = 12
# zxcvbn's scale: 3 is "safely unguessable" (about 10^8 guesses: common passwords, keyboard walks, repeats,
# years and dictionary words with digits score lower). It rates the first 72 characters (its own limit).
MIN_PASSWORD_SCORE = 3
_RATED_LENGTH = 72
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
# Checked when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why."""


def normalize_email(email: str) -> str:
    """The email as stored: trimmed and lower-case."""
    return (email or "").strip().lower()


def _check(email: str, password: str, role: str) -> None:
    if not _EMAIL.fullmatch(email):
        raise UserError(f"not an email address: {email!r}")
    if role not in ROLES:
        raise UserError("role must be one of " + ", ".join(ROLES))
    check_password(password, email)


def check_password(password: str, email: str = "") -> None:
    """UserError when the password is shorter than MIN_PASSWORD_LENGTH or easy to guess.

    Easy to guess is zxcvbn's (a maintained estimator with lists of common passwords, names and words)
    score below MIN_PASSWORD_SCORE; the email and its name part count as known words.
    """
    password = password or ""
    if len(password) < MIN_PASSWORD_LENGTH or not password.strip():
        raise UserError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters (not only spaces)")
    rating = zxcvbn(password[:_RATED_LENGTH], user_inputs=[email, email.partition("@")[0]] if email else [],
                    max_length=_RATED_LENGTH)
    if rating["score"] < MIN_PASSWORD_SCORE:
        why = rating["feedback"].get("warning") or "It is made of common words, names or patterns"
        raise UserError(f"the password is too easy to guess: {why[0].lower()}{why[1:].rstrip('.')} (choose a longer or less "
                        "common one, e.g. four unrelated words)")


def create_user(email: str, password: str, role: str = "admin") -> AdminUser:
    """Store a new admin user; UserError when the email is taken or a value is bad."""
    email = normalize_email(email)
    _check(email, password, role)
    user = AdminUser(email=email, role=role, sessionToken=AdminUser.new_session_token())
    user.set_password(password)
    try:
        user.save(force_insert=True)
    except NotUniqueError:
        raise UserError(f"{email} already exists") from None
    return user


def update_user(email: str, password: str, role: str) -> AdminUser:
    """Change an existing user's password and role, ending all their sessions; UserError when there is no such user."""
    email = normalize_email(email)
    _check(email, password, role)
    user = AdminUser.objects(email=email).first()
    if user is None:
        raise UserError(f"no user {email}")
    user.set_password(password)
    user.role = role
    user.sessionToken = AdminUser.new_session_token()
    user.save()
    return user


def end_sessions(user_id) -> None:
    """End every session of this user (on every device) by drawing a new session token."""
    AdminUser.objects(id=user_id).update_one(set__sessionToken=AdminUser.new_session_token())


def session_user(session_id: str | None) -> AdminUser | None:
    """The user of a session id ``<user id>:<session token>``, loaded afresh; None when it no longer holds.

    None for a malformed id, a deleted user, or a token that sign-out or a password
    change has replaced (and for ids of old sessions, which carried no token).
    """
    user_id, _, token = (session_id or "").partition(":")
    if not token:
        return None
    try:
        user = AdminUser.objects(id=ObjectId(user_id)).first()
    except (InvalidId, TypeError):
        return None
    if user is None or not user.sessionToken:
        return None
    if not hmac.compare_digest(user.sessionToken.encode(), token.encode()):
        return None
    return user


def authenticate(email: str, password: str) -> AdminUser | None:
    """The user whose email and password match, else None (in about the same time either way)."""
    user = AdminUser.objects(email=normalize_email(email)).first() if email else None
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    if not user.check_password(password or ""):
        return None
    AdminUser.objects(id=user.id).update_one(set__lastLoginAt=utcnow())
    if not user.sessionToken:
        # Users created before session tokens get one at their first sign-in (never overwriting a newer one).
        AdminUser.objects(id=user.id, sessionToken=None).update_one(set__sessionToken=AdminUser.new_session_token())
        user.reload()
    return user


def first_run_notice() -> str | None:
    """How to create the first admin, when there is none yet; None otherwise."""
    if AdminUser.objects.limit(1).count(with_limit_and_skip=True):
        return None
    return ("No admin user yet. Create one to sign in to the dashboard at /admin/embeddings:\n"
            "  flask --app app create-admin you@example.com            (prompts for the password)\n"
            "  flask --app app create-admin viewer@example.com --role viewer")
