"""A stand-in for ModelHub's API behind httpx.MockTransport: routes, recorded requests, pages."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

URL = "http://hub.test"
TOKEN = "mh_test-token"

Handler = Callable[[httpx.Request], httpx.Response]


def envelope(code: str, message: str, detail=None) -> dict:
    return {"error": {"code": code, "message": message, "detail": detail}}


def page(results: list, *, next_page: bool = False) -> dict:
    return {
        "count": len(results),
        "next": f"{URL}/api/x/?page=2" if next_page else None,
        "previous": None,
        "results": results,
    }


class FakeServer:
    """Answer requests by (method, path); each route answers a list of responses in turn (the last one repeats)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *responses) -> FakeServer:
        """Add answers: dicts/lists are JSON 200s, (status, body) tuples, httpx.Responses or callables."""
        self.routes.setdefault((method, path), []).extend(responses)
        return self

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return httpx.Response(404, json=envelope("not_found", f"No API endpoint at {request.url.path}."))
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, tuple):
            status, body = answer
            return httpx.Response(status, json=body)
        return httpx.Response(200, json=answer)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    @staticmethod
    def json_of(request: httpx.Request):
        return json.loads(request.content)
