"""What the protocol views share: errors as ``{"error": "..."}`` and a schema that documents them so.

OIP v2 and TF Serving both answer an error with one string under ``error``. ``ProtocolApi``
runs ModelHub's one exception handler (core.exception_handler) and reshapes its envelope into
that string, keeping the status (a 409 "not ready" becomes the protocols' 400) and the headers
(Retry-After, WWW-Authenticate). ``ProtocolAutoSchema`` lists the shared error statuses of
core.schema with that shape, so that /api/schema/ says what these paths answer.
"""

import json

from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from core.schema import ModelHubAutoSchema


class ProtocolErrorSerializer(serializers.Serializer):
    """Every error of the protocol paths: {"error": "what happened, what was expected, how to fix it"}."""

    error = serializers.CharField()


def protocol_error(description: str) -> OpenApiResponse:
    """Return a documented protocol error response for ``extend_schema(responses=...)``."""
    return OpenApiResponse(response=ProtocolErrorSerializer, description=description)


def json_response(document, *, status: int = 200, headers: dict | None = None) -> HttpResponse:
    """Return ``document`` as JSON (NaN and infinities as the tokens TF Serving writes)."""
    return HttpResponse(json.dumps(document), status=status, content_type="application/json", headers=headers)


class ProtocolAutoSchema(ModelHubAutoSchema):
    """ModelHub's schema for a protocol view: the shared errors, with the body {"error": "..."}."""

    def error_body(self, description: str) -> OpenApiResponse:
        return protocol_error(description)


class ProtocolApi(APIView):
    """An API view of a protocol: JSON only, errors as {"error": "..."} with the protocol's statuses."""

    renderer_classes = [JSONRenderer]
    schema = ProtocolAutoSchema()

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        envelope = response.data.get("error") if isinstance(response.data, dict) else None
        message = envelope.get("message") if isinstance(envelope, dict) else str(response.data)
        status = 400 if response.status_code == 409 else response.status_code
        answer = JsonResponse({"error": message}, status=status)
        for header in ("Retry-After", "WWW-Authenticate"):
            if header in response:
                answer[header] = response[header]
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            answer["Retry-After"] = str(retry_after)
        return answer
