"""The OpenAPI schema at /api/schema/: what every view has in common, documented in one place.

drf-spectacular builds the schema from the views. ``ModelHubAutoSchema`` (REST_FRAMEWORK's
DEFAULT_SCHEMA_CLASS) adds what the views share, so that the schema says what the API answers:

- A list (``responses=Serializer(many=True)`` on a GET, answered by
  ``core.api.paginated_response``) is StandardPagination's envelope
  ``{count, next, previous, results}``, with its ``page`` and ``page_size`` parameters.
- The error statuses that come from the framework rather than from one view, each with the
  envelope of core.exception_handler (``ErrorSerializer``): 401 (no, invalid, expired
  or revoked token), 403 (CSRF, for session-cookie clients on unsafe methods), 404 (everywhere:
  objects and teams you cannot see, a page past the end, an unknown ``?format=``), 400 everywhere
  (a query-string integer out of range; any bad field where the operation reads input), 413 /
  415 where the operation reads a body, 429 with Retry-After where the view
  has a throttle scope that counts the method (core.throttling), 503 (database unavailable).
- A serializer nested in a view (``HeadTransitionApi.InputSerializer``) without a ``Meta.ref_name``
  gets a component name from its view, so that two views' "Input" never collide.

Statuses that one view raises itself (403 for a role, 409, 429, 504, ...) are declared on that
view with ``error_response("when")``; when both apply, the descriptions are joined.
"""

from collections.abc import Callable
from dataclasses import dataclass

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication

from core.pagination import StandardPagination
from core.throttling import counted_scope, setting_name


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Machine-readable: invalid, not_authenticated, not_found, permission_denied, conflict, "
        "invalid_transition, payload_too_large, too_many_attempts, database_unavailable, ..."
    )
    message = serializers.CharField(help_text="What happened, what was expected and how to fix it.")
    detail = serializers.JSONField(
        allow_null=True,
        help_text='Per-field messages for a 400 (e.g. {"name": ["This field is required."]}), facts such '
        'as {"current_status": "approved"} for a 409, or null.',
    )


class ErrorSerializer(serializers.Serializer):
    """Every error response: {"error": {"code", "message", "detail"}}."""

    error = ErrorDetailSerializer()


def error_response(description: str) -> OpenApiResponse:
    """Return an error response (the error envelope) for ``extend_schema(responses={status: ...})``."""
    return OpenApiResponse(response=ErrorSerializer, description=description)


@dataclass(frozen=True)
class JsonSchemaBody:
    """A request body described by JSON schemas instead of a serializer, built when the schema is.

    ``build()`` returns ``(components, body)``: named schemas for components/schemas, and the
    body's schema, which may refer to them (``#/components/schemas/<name>``). Use it as
    ``extend_schema(request={"application/json": JsonSchemaBody(build)})``.
    """

    build: Callable[[], tuple[dict[str, dict], dict]]


RETRY_AFTER_HEADER = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before trying again."}
}
# Statuses whose responses carry Retry-After (the login throttle; the database-down handler).
RETRY_AFTER_STATUSES = ("429", "503")

UNAUTHENTICATED = (
    "Not authenticated: no credentials, or a token that is unknown, expired or revoked (the message says "
    "which). Send 'Authorization: Token <key>'."
)
CSRF_FAILED = "CSRF check failed: only for clients authenticated by the dashboard's session cookie."
NOT_FOUND = (
    "Not found: an object or team that does not exist or that you cannot see (non-members get 404, "
    "never 403), a page past the end of a list, or an unknown ?format=."
)
INVALID = (
    "Invalid input: the message names each bad field, and detail maps fields to messages; or an integer in the "
    "query string beyond 9223372036854775807."
)
QUERY_OUT_OF_RANGE = "An integer in the query string beyond 9223372036854775807 (no id or number is that large)."
TOO_LARGE = (
    "The request body is larger than MODELHUB_MAX_UPLOAD_BYTES (file uploads) or MODELHUB_MAX_REQUEST_BODY_BYTES "
    "(JSON and form bodies); nothing was stored."
)
THROTTLED = (
    "Too many {scope} requests from this user (code throttled): at most {setting} per period. Nothing was done; "
    "wait Retry-After seconds. detail holds scope, limit, period_seconds and retry_after."
)
UNSUPPORTED_MEDIA_TYPE = "The request body's Content-Type is not one this operation reads (see requestBody)."
DATABASE_UNAVAILABLE = "The database is not answering; nothing was changed. Retry after Retry-After seconds."
PAGINATION_PARAMETERS = {"page", "page_size"}


class ModelHubAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the pagination, errors and names every ModelHub view shares."""

    def _get_paginator(self):
        # drf-spectacular asks only for list responses. APIViews have no pagination_class, but every
        # list of this API is answered by paginated_response, i.e. by StandardPagination.
        return StandardPagination() if self.method == "GET" else None

    def get_serializer_name(self, serializer: serializers.Serializer, direction: str) -> str:
        cls = serializer.__class__
        outer, _, inner = cls.__qualname__.rpartition(".")
        if outer and "<locals>" not in outer:  # nested in a view: "HeadTransitionApi.InputSerializer"
            return outer.rpartition(".")[2].removesuffix("Api") + inner
        return cls.__name__

    def _get_request_for_media_type(self, serializer, direction="request"):
        if isinstance(serializer, JsonSchemaBody):
            components, body = serializer.build()
            for name, schema in components.items():
                component = ResolvedComponent(
                    name=name, type=ResolvedComponent.SCHEMA, object=f"json-schema:{name}", schema=schema
                )
                self.registry.register_on_missing(component)
            return body, True
        return super()._get_request_for_media_type(serializer, direction)

    def error_body(self, description: str) -> OpenApiResponse:
        """Return the documented body of a shared error (a protocol's schema answers its own shape)."""
        return error_response(description)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status_code, description in self._common_errors():
            if status_code in responses:
                existing = responses[status_code].get("description", "")
                if description not in existing:
                    responses[status_code]["description"] = f"{existing} {description}".strip()
            else:
                responses[status_code] = self._get_response_for_code(self.error_body(description), status_code)
        for status_code in RETRY_AFTER_STATUSES:
            if status_code in responses:
                responses[status_code].setdefault("headers", {}).update(RETRY_AFTER_HEADER)
        return dict(sorted(responses.items()))

    def _common_errors(self) -> list[tuple[str, str]]:
        """Return (status, description) for the errors this operation shares with others."""
        authenticators = self.view.get_authenticators()
        reads_body = self.method in ("POST", "PUT", "PATCH") and self._get_request_body() is not None
        reads_query = any(
            parameter["in"] == "query" and parameter["name"] not in PAGINATION_PARAMETERS
            for parameter in self._get_parameters()
        )
        # Any API request may get a 400 for an out-of-range integer in its query string
        # (core.middleware.MalformedRequestMiddleware), whatever parameters it documents.
        errors = [("400", INVALID if reads_body or reads_query else QUERY_OUT_OF_RANGE)]
        if authenticators:
            errors.append(("401", UNAUTHENTICATED))
        if self.method not in ("GET", "HEAD", "OPTIONS") and any(
            isinstance(authenticator, SessionAuthentication) for authenticator in authenticators
        ):
            errors.append(("403", CSRF_FAILED))
        errors.append(("404", NOT_FOUND))
        if reads_body:
            errors.append(("413", TOO_LARGE))
            errors.append(("415", UNSUPPORTED_MEDIA_TYPE))
        scope = counted_scope(self.view, self.method)
        if scope is not None:
            errors.append(("429", THROTTLED.format(scope=scope.replace("_", " "), setting=setting_name(scope))))
        errors.append(("503", DATABASE_UNAVAILABLE))
        return errors
