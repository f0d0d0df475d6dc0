"""Error answers in the shapes the real services send: Google's (routing, auth, quota), Anthropic's (the Claude
model layer) and OAuth's (the token endpoint)."""

from __future__ import annotations

from typing import Any


class HttpError(Exception):
    """An error answer: HTTP status plus the JSON body the real service sends (gzipped if `gzipped`)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None, gzipped: bool = False):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.gzipped = gzipped


_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  405: "UNIMPLEMENTED", 409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                  499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
                  504: "DEADLINE_EXCEEDED"}


def google_error(code: int, message: str) -> HttpError:
    return HttpError(code, {"error": {"code": code, "message": message, "status": _GOOGLE_STATUS.get(code, "UNKNOWN")}})


def anthropic_error(status: int, kind: str, message: str) -> HttpError:
    return HttpError(status, {"type": "error", "error": {"type": kind, "message": message}})


def oauth_error(error: str, description: str, status: int = 400) -> HttpError:
    return HttpError(status, {"error": error, "error_description": description})


def model_not_found(project: str, location: str, publisher: str, model: str) -> HttpError:
    """Vertex's answer for a model it does not serve at that location."""
    return google_error(404, f"Publisher Model `projects/{project}/locations/{location}/publishers/{publisher}/"
                             f"models/{model}` not found.")


class InvalidRequest(Exception):
    """A body rule was broken; the argument is the message the API would send."""


UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
    "authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")
