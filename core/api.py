"""Small helpers shared by the thin API views."""

from django.db.models import QuerySet
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from core.pagination import StandardPagination

# The lifecycle fields every tracked-work output shows (core.models.TrackedWork).
TRACKED_WORK_FIELDS = ["started_at", "finished_at", "attempts", "worker", "heartbeat_at"]


def paginated_response(request, queryset: QuerySet | list, serializer_class: type[Serializer], view=None) -> Response:
    """Return one page of `queryset`, serialized, in the standard paginated envelope.

    Declare the view method with ``extend_schema(responses=serializer_class(many=True))``: the
    schema (core.schema) documents every GET list as this envelope, with page/page_size.
    """
    paginator = StandardPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)
