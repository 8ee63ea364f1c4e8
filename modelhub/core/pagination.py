"""Page-number pagination used by every list endpoint (`?page=N&page_size=M`)."""

from rest_framework.pagination import PageNumberPagination


class StandardPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_paginated_response_schema(self, schema: dict) -> dict:
        """Return the envelope's schema: all four keys are always there (next/previous may be null)."""
        envelope = super().get_paginated_response_schema(schema)
        envelope["required"] = ["count", "next", "previous", "results"]
        envelope["properties"]["count"]["minimum"] = 0
        return envelope
