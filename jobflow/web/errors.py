"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"?}}."""
import logging

from flask import jsonify, request
from pymongo.errors import ConnectionFailure, PyMongoError
from werkzeug.exceptions import HTTPException

from jobflow.jobs.store import JobNotFound, ValidationError

log = logging.getLogger("jobflow.web")

DATABASE_RETRY_AFTER = "5"
_UNAVAILABLE_PAGE = ("<!doctype html>\n<html lang=en>\n<title>503 Service Unavailable</title>\n"
                     "<h1>Service Unavailable</h1>\n<p>The database is not answering. Please try again in a few "
                     "seconds.</p>\n")
_ERROR_PAGE = ("<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
               "<h1>Internal Server Error</h1>\n<p>Something went wrong on our side.</p>\n")


class APIError(Exception):
    """An error answered as JSON with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields, self.headers = status, code, message, fields, headers


def error_response(status: int, code: str, message: str, fields: dict | None = None, headers=None):
    """The JSON response for an error."""
    body = {"error": {"code": code, "message": message}}
    if fields:
        body["error"]["fields"] = fields
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_api_error(exc: APIError):
    return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)


def handle_validation(exc: ValidationError):
    return error_response(400, "invalid_input", "The request has invalid fields.", exc.fields)


def handle_not_found(exc: JobNotFound):
    return error_response(404, "not_found", "No job with that id.")


def handle_http(exc: HTTPException):
    code = (exc.name or "error").lower().replace(" ", "_")
    messages = {
        400: "The request body is not valid JSON.",
        404: "No such endpoint.",
        405: "Method not allowed on this endpoint.",
        413: "The request body is too large.",
        415: "Send the body as application/json.",
        429: "Too many requests; slow down.",
    }
    headers = {}
    if exc.code == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)
    return error_response(exc.code or 500, code, messages.get(exc.code, exc.description or "Error."), headers=headers)


def handle_database_error(exc: PyMongoError):
    """The database is down or did not answer in time: 503 (JSON under /api, a plain page elsewhere), one log line.

    Any other database error is a 500 with one log line (never a traceback, never the query).
    """
    unavailable = isinstance(exc, ConnectionFailure) or bool(getattr(exc, "timeout", False))
    log.warning("%s %s: database %s (%s)", request.method, request.path,
                "unavailable" if unavailable else "error", type(exc).__name__)
    if unavailable:
        if request.path.startswith("/api/"):
            return error_response(503, "database_unavailable", "The database is not answering; try again shortly.",
                                  headers={"Retry-After": DATABASE_RETRY_AFTER, "Cache-Control": "no-store"})
        return _UNAVAILABLE_PAGE, 503, {"Content-Type": "text/html; charset=utf-8",
                                        "Retry-After": DATABASE_RETRY_AFTER, "Cache-Control": "no-store"}
    if request.path.startswith("/api/"):
        return error_response(500, "database_error", "The database refused the request.")
    return _ERROR_PAGE, 500, {"Content-Type": "text/html; charset=utf-8"}
