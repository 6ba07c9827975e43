"""The OpenAPI description matches the app's routes, and real responses match its schemas."""
import re

import jsonschema
import pytest
from referencing import Registry, Resource

from jobflow.web.api.openapi import spec

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def app_operations(app):
    ops = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        ops |= {(path, m) for m in rule.methods & METHODS}
    return ops


def documented_operations():
    return {(path, method.upper()) for path, item in spec()["paths"].items()
            for method in item if method.upper() in METHODS}


def test_every_route_is_documented_and_nothing_else(app):
    assert app_operations(app) == documented_operations()


def test_document_is_served_and_valid_openapi(client):
    body = client.get("/api/openapi.json").get_json()
    assert body["openapi"].startswith("3.")
    for path, item in body["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["responses"], f"{method} {path} has no responses"


def validator_for(name):
    document = spec()
    from referencing.jsonschema import DRAFT202012
    registry = Registry().with_resource("urn:api", Resource.from_contents(document, default_specification=DRAFT202012))
    schema = {"$ref": f"urn:api#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.mark.parametrize("name", ["Job", "JobList", "SimilarJobs", "Error", "Health"])
def test_real_responses_match_their_schemas(client, auth_headers, name):
    created = client.post("/api/jobs", json={"title": "Nurse", "description": "Night shifts", "category": "Healthcare"},
                          headers=auth_headers).get_json()
    client.post("/api/jobs", json={"title": "Nurse 2", "description": "Days", "category": "Healthcare"},
                headers=auth_headers)
    bodies = {"Job": created, "JobList": client.get("/api/jobs").get_json(),
              "SimilarJobs": client.get(f"/api/jobs/{created['id']}/similar").get_json(),
              "Error": client.post("/api/jobs", json={}, headers=auth_headers).get_json(),
              "Health": client.get("/api/health/embeddings").get_json()}
    validator_for(name).validate(bodies[name])
