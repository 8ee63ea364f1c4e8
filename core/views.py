"""Django-level error pages: JSON envelope under /api/, HTML elsewhere."""

from django.http import JsonResponse
from django.shortcuts import render

from core.exception_handler import error_body


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        message = f"No API endpoint at {request.path}. See /api/docs/ for the endpoints."
        return JsonResponse(error_body("not_found", message), status=404)
    return render(request, "404.html", status=404)
