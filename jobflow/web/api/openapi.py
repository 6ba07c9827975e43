"""``GET /api/openapi.json``: the OpenAPI 3 description of the JSON API (kept true by tests/test_openapi.py)."""
from flask import jsonify

from jobflow.jobs.store import FIELD_LIMITS, REQUIRED_FIELDS
from jobflow.models.job import JOB_STATUSES
from jobflow.web.api.blueprint import bp

_ERROR = {"$ref": "#/components/responses/Error"}
_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
       "description": "the job's id (24 hex digits); anything else answers 404"}
_TOKEN = [{"bearer": []}]
_DRY_RUN_BODY = {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "properties": {"dryRun": {"type": "boolean", "description": "show the impact; change nothing"}}}}}}


def _job_fields(required: bool) -> dict:
    properties = {name: {"type": ["string", "null"] if name not in REQUIRED_FIELDS else "string",
                         "maxLength": limit} for name, limit in FIELD_LIMITS.items()}
    for name in REQUIRED_FIELDS:
        properties[name]["minLength"] = 1
    properties["status"] = {"type": "string", "enum": list(JOB_STATUSES)}
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(REQUIRED_FIELDS)
    return schema


def _ok(schema_ref: str, description: str = "OK") -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _action(summary: str, extra_props: dict | None = None) -> dict:
    body = {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"dryRun": {"type": "boolean"}, **(extra_props or {})}}}}}
    return {"post": {"summary": summary, "security": _TOKEN, "requestBody": body,
                     "responses": {"200": _ok("ActionResult"), "400": _ERROR, "401": _ERROR, "403": _ERROR,
                                   "429": _ERROR}}}


def spec() -> dict:
    """The OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "JobFlow Similar API", "version": "1.0.0",
                 "description": "Jobs, their precomputed similar jobs, health and the admin API."},
        "paths": {
            "/api/jobs": {
                "get": {"summary": "Jobs newest first", "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {"name": "category", "in": "query", "schema": {"type": "string"}},
                    {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 200},
                     "description": "text searched in title and company"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "after", "in": "query", "schema": {"type": "string"},
                     "description": "cursor: the id of the last job of the previous page"}],
                    "responses": {"200": _ok("JobList"), "400": _ERROR}},
                "post": {"summary": "Create a job (queues its embedding)", "security": _TOKEN,
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": _job_fields(required=True)}}},
                         "responses": {"201": _ok("Job", "Created"), "400": _ERROR, "401": _ERROR, "413": _ERROR,
                                       "415": _ERROR}},
            },
            "/api/jobs/{job_id}": {
                "parameters": [_ID],
                "get": {"summary": "One job", "responses": {"200": _ok("Job"), "404": _ERROR}},
                "put": {"summary": "Replace a job", "security": _TOKEN,
                        "requestBody": {"required": True, "content": {"application/json": {
                            "schema": _job_fields(required=True)}}},
                        "responses": {"200": _ok("Job"), "400": _ERROR, "401": _ERROR, "404": _ERROR,
                                      "413": _ERROR, "415": _ERROR}},
                "patch": {"summary": "Change some fields (text changes re-queue the embedding)", "security": _TOKEN,
                          "requestBody": {"required": True, "content": {"application/json": {
                              "schema": _job_fields(required=False)}}},
                          "responses": {"200": _ok("Job"), "400": _ERROR, "401": _ERROR, "404": _ERROR,
                                        "413": _ERROR, "415": _ERROR}},
                "delete": {"summary": "Delete a job", "security": _TOKEN,
                           "responses": {"204": {"description": "Deleted"}, "401": _ERROR, "404": _ERROR}},
            },
            "/api/jobs/{job_id}/similar": {
                "parameters": [_ID],
                "get": {"summary": "The job's similar jobs (precomputed, or the category/location fallback)",
                        "parameters": [{"name": "limit", "in": "query",
                                        "schema": {"type": "integer", "minimum": 1},
                                        "description": "up to SIMILARITY_TOP_N"},
                                       {"name": "language", "in": "query", "schema": {"type": "string"},
                                        "description": "only jobs in this language (en, sq, en-GB, English...), "
                                                       "taken from the same list, so fewer may come back; "
                                                       "a value that names no language is a 400"}],
                        "responses": {"200": _ok("SimilarJobs"), "400": _ERROR, "404": _ERROR}},
            },
            "/api/health/embeddings": {
                "get": {"summary": "healthy or degraded, with the reasons; 503 when the database is down",
                        "responses": {"200": _ok("Health"), "503": _ok("HealthError", "Database unavailable")}},
            },
            "/api/admin/embeddings/status": {
                "get": {"summary": "Coverage, totals, queue, workers, throughput, alerts", "security": _TOKEN,
                        "responses": {"200": {"description": "OK", "content": {"application/json": {
                            "schema": {"type": "object", "required": ["coverage", "jobs", "queue", "workers"]}}}},
                                      "401": _ERROR}}},
            "/api/admin/embeddings/queue": {
                "get": {"summary": "Queue items newest first, keyset pages", "security": _TOKEN, "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {"name": "task", "in": "query", "schema": {"type": "string"}},
                    {"name": "q", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                    {"name": "before", "in": "query", "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["items", "count", "counts"]}}}},
                                  "400": _ERROR, "401": _ERROR}}},
            "/api/admin/embeddings/workers": {
                "get": {"summary": "Workers with heartbeat levels", "security": _TOKEN,
                        "responses": {"200": {"description": "OK", "content": {"application/json": {
                            "schema": {"type": "object", "required": ["workers"]}}}}, "401": _ERROR}}},
            "/api/admin/embeddings/recompute-all": _action("Ask the workers to recompute every list"),
            "/api/admin/embeddings/retry-failed": _action("Failed items back to pending",
                                                          {"taskType": {"type": "string"}}),
            "/api/admin/embeddings/clear-old-queue": _action("Delete finished items older than days",
                                                             {"days": {"type": "integer", "minimum": 0,
                                                                       "maximum": 3650}}),
            "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "ADMIN_API_TOKEN"}},
            "responses": {"Error": {"description": "An error, one shape everywhere", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                   "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}}},
                "JobSummary": {"type": "object", "required": ["id", "title", "status"], "properties": {
                    "id": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "string"},
                    "company": {"type": "string"}, "location": {"type": "string"}, "category": {"type": "string"},
                    "createdAt": {"type": ["string", "null"]}, "updatedAt": {"type": ["string", "null"]}}},
                "Job": {"allOf": [{"$ref": "#/components/schemas/JobSummary"}, {"type": "object", "properties": {
                    "description": {"type": "string"}, "similarJobsCount": {"type": "integer"},
                    "embedding": {"type": ["object", "null"]}}}]},
                "JobList": {"type": "object", "required": ["jobs", "count", "total", "next"], "properties": {
                    "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/JobSummary"}},
                    "count": {"type": "integer"}, "total": {"type": "integer"},
                    "next": {"type": ["string", "null"]}}},
                "SimilarJobs": {"type": "object", "required": ["similarJobs", "count", "cached", "computedAt"],
                                "properties": {
                                    "similarJobs": {"type": "array", "items": {
                                        "type": "object", "required": ["job", "score"], "properties": {
                                            "job": {"$ref": "#/components/schemas/JobSummary"},
                                            "score": {"type": ["number", "null"]},
                                            "language": {"type": "string", "description":
                                                         "the job's language field, else detected; und: unknown"}}}},
                                    "count": {"type": "integer"}, "cached": {"type": "boolean"},
                                    "computedAt": {"type": ["string", "null"]}}},
                "Health": {"type": "object", "required": ["status", "timestamp", "metrics"], "properties": {
                    "status": {"type": "string", "enum": ["healthy", "degraded"]},
                    "timestamp": {"type": "string"}, "metrics": {"type": "object"},
                    "reasons": {"type": "array", "items": {"type": "string"}}}},
                "HealthError": {"type": "object", "required": ["status", "error"], "properties": {
                    "status": {"const": "error"}, "error": {"type": "object"}}},
                "ActionResult": {"type": "object"},
            },
        },
    }


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 description of this API."""
    return jsonify(spec())
