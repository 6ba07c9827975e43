"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"?}}."""
from flask import jsonify
from werkzeug.exceptions import HTTPException

from ..jobs import JobNotFound, ValidationError


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
