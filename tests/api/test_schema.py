"""The OpenAPI schema at /api/schema/ tells the truth: pages, errors, names, request bodies.

These checks read the generated schema (and, for a few, compare it with real responses); the
schemathesis run in test_schemathesis.py then tests every operation against it from outside.
"""

import pytest
from django.core.management import call_command
from django.urls import resolve
from drf_spectacular.generators import SchemaGenerator
from openapi_schema_validator import OAS30Validator

LIST_PATHS = {
    "/api/tokens/",
    "/api/teams/",
    "/api/teams/{slug}/members/",
    "/api/uploads/",
    "/api/backbones/",
    "/api/heads/",
    "/api/heads/{id}/comments/",
    "/api/heads/{id}/history/",
    "/api/imports/",
    "/api/assemblies/",
    "/api/datasets/",
    "/api/jobs/",
}
PUBLIC_OPERATIONS = {("post", "/api/auth/token/")}  # no authentication at all: no 401 from the framework
METHODS = ("get", "post", "put", "patch", "delete")
ERROR_REF = "#/components/schemas/Error"
PROTOCOL_PREFIXES = ("/v1/", "/v2")  # the inference protocols' own paths and error shape
PROTOCOL_ERROR_REF = "#/components/schemas/ProtocolError"


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema):
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def resolved(schema, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rpartition("/")[2]]
    return node


def json_schema_of(schema, response: dict) -> dict:
    return response["content"]["application/json"]["schema"]


def validate(schema, instance, response_schema: dict) -> None:
    """Validate a JSON body against a response schema of `schema` (refs resolved in its components)."""
    OAS30Validator({**response_schema, "components": schema["components"]}).validate(instance)


def test_schema_validates_without_a_single_warning(tmp_path):
    # Fails on drf-spectacular's W001 "identical names" warnings, enum collisions, unresolved bodies...
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


def test_every_list_operation_documents_the_paginated_envelope(schema):
    documented = {path for method, path, _ in operations(schema) if method == "get" and path in LIST_PATHS}
    assert documented == LIST_PATHS
    for path in LIST_PATHS:
        operation = schema["paths"][path]["get"]
        page = resolved(schema, json_schema_of(schema, operation["responses"]["200"]))
        assert page["type"] == "object", path
        assert set(page["required"]) == {"count", "next", "previous", "results"}, path
        assert page["properties"]["results"]["type"] == "array", path
        assert "$ref" in page["properties"]["results"]["items"], path
        assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} >= {"page", "page_size"}, path


def test_no_success_response_is_a_bare_array(schema):
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if status.startswith("2") and "application/json" in response.get("content", {}):
                assert resolved(schema, json_schema_of(schema, response)).get("type") != "array", (method, path)


# Paths that speak another tool's protocol, with that tool's error shape (MLflow: {"error_code", "message"}).
PROTOCOL_PATHS = ("/api/2.0/mlflow/", "/api/2.0/mlflow-artifacts/")


def test_every_operation_documents_its_common_errors_with_the_envelope(schema):
    for method, path, operation in operations(schema):
        if path.startswith(PROTOCOL_PATHS):
            continue  # a third-party protocol's own error shape (tests/protocols/ checks it)
        responses = operation["responses"]
        expected = {"400", "404", "503"}  # 400: an out-of-range integer in any query string
        if (method, path) not in PUBLIC_OPERATIONS:
            expected.add("401")
        if "requestBody" in operation:
            expected |= {"400", "413", "415"}
        assert expected <= set(responses), (method, path, sorted(responses))
        for status, response in responses.items():
            if status[0] in "45" and path.startswith(PROTOCOL_PREFIXES):
                # OIP v2 and TF Serving answer {"error": "..."} (inference.base.ProtocolErrorSerializer),
                # or nothing (an OIP health "false" is an empty 400).
                if "content" in response:
                    assert json_schema_of(schema, response) == {"$ref": PROTOCOL_ERROR_REF}, (method, path, status)
            elif status[0] in "45" and (path, status) != ("/api/health/", "503"):
                assert json_schema_of(schema, response) == {"$ref": ERROR_REF}, (method, path, status)
                assert response["description"], (method, path, status)
        assert "Retry-After" in responses["503"]["headers"], (method, path)


@pytest.mark.parametrize(
    "method, path, statuses",
    [
        ("post", "/api/auth/token/", {"401", "429"}),
        ("post", "/api/heads/{id}/approve/", {"403", "409"}),
        ("post", "/api/heads/{id}/archive/", {"403", "409"}),
        ("post", "/api/backbones/", {"200", "202", "409"}),
        ("post", "/api/teams/{slug}/members/", {"403"}),
        ("get", "/api/assemblies/{id}/download/", {"409"}),
        ("post", "/api/assemblies/{id}/predict/", {"200", "202", "409"}),
        ("get", "/api/assemblies/{id}/predictions/{pid}/", {"200", "404"}),
        ("post", "/api/jobs/{id}/cancel/", {"409"}),
        ("post", "/api/jobs/{id}/retry/", {"400", "409"}),
        ("post", "/api/forgetting-reports/{id}/accept/", {"403", "409"}),
    ],
)
def test_statuses_a_view_raises_itself_are_documented(schema, method, path, statuses):
    assert statuses <= set(schema["paths"][path][method]["responses"])


def test_component_names_are_unique_and_say_what_they_are(schema):
    names = set(schema["components"]["schemas"])
    assert not names & {"Input", "InputRequest", "Output", "Serializer"}
    for name in ("HeadTransitionRequest", "AssemblyCreateRequest", "PredictRequest", "TeamMembership", "Error"):
        assert name in names


def test_request_bodies_list_exactly_the_media_types_each_view_parses(schema):
    for method, path, operation in operations(schema):
        if "requestBody" not in operation:
            continue
        view = resolve(path.replace("{id}", "1").replace("{slug}", "vision")).func.view_class
        parsed = {parser.media_type for parser in view().get_parsers()}
        assert set(operation["requestBody"]["content"]) == parsed, (method, path)


def test_uploads_are_binary_files_in_the_request_schema(schema):
    for name, field in [
        ("UploadCreateRequest", "file"),
        ("BackboneUploadRequest", "file"),
        ("HeadUploadRequest", "file"),
        ("DatasetUploadRequest", "file"),
    ]:
        assert schema["components"]["schemas"][name]["properties"][field] == {"type": "string", "format": "binary"}
    files = schema["components"]["schemas"]["ImportMultipartRequest"]["properties"]["files"]
    assert files["items"] == {"type": "string", "format": "binary"}


def test_job_request_body_follows_the_job_specs(schema, settings):
    body = schema["paths"]["/api/jobs/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    kinds = set(body["discriminator"]["mapping"])
    assert kinds == {"train_head", "train_heads", "fine_tune", "grow_backbone", "evaluate_head"}
    train_head = schema["components"]["schemas"]["TrainHeadJobRequest"]
    assert set(train_head["required"]) == {"team", "kind", "backbone", "dataset", "task"}
    assert train_head["properties"]["epochs"]["maximum"] == settings.MODELHUB_MAX_EPOCHS
    good = {"team": "vision", "kind": "train_head", "backbone": 1, "dataset": 2, "task": "sentiment"}
    validate(schema, {**good, "head": {"type": "mlp", "hidden": [8]}, "epochs": 2}, body)
    with pytest.raises(Exception, match="epochs|oneOf|valid"):
        validate(schema, {**good, "epochs": settings.MODELHUB_MAX_EPOCHS + 1}, body)


# --- The schema against real responses (in-process; the schemathesis test does this from outside) ---


@pytest.mark.django_db
def test_real_list_pages_and_errors_match_the_schema(schema, api_client_for, client):
    member = api_client_for("schema-reader", role="admin")
    head_path = "/api/heads/{id}/"
    for path in sorted(LIST_PATHS):
        if "{id}" in path:
            continue
        url = path.replace("{slug}", "vision")
        response = member.get(url, {"page_size": 1})
        assert response.status_code == 200, (url, response.content)
        validate(schema, response.json(), json_schema_of(schema, schema["paths"][path]["get"]["responses"]["200"]))
    member.post("/api/tokens/", {"name": "second"}, format="json")  # two tokens: a next page exists
    page = member.get("/api/tokens/", {"page_size": 1}).json()
    assert page["count"] == 2 and page["next"] and page["previous"] is None
    validate(schema, page, json_schema_of(schema, schema["paths"]["/api/tokens/"]["get"]["responses"]["200"]))

    errors = [
        (member.get("/api/heads/987654/"), head_path, "get", 404),
        (member.get("/api/tokens/", {"page": 99}), "/api/tokens/", "get", 404),
        (member.get("/api/heads/", {"status": "bogus"}), "/api/heads/", "get", 400),
        (client.get("/api/heads/987654/"), head_path, "get", 401),
        (member.post("/api/jobs/", "x", content_type="text/plain"), "/api/jobs/", "post", 415),
        (member.post("/api/jobs/", {"team": "vision", "kind": "train_head"}, format="json"), "/api/jobs/", "post", 400),
    ]
    for response, path, method, status in errors:
        assert response.status_code == status, (path, response.content)
        documented = schema["paths"][path][method]["responses"][str(status)]
        validate(schema, response.json(), json_schema_of(schema, documented))
