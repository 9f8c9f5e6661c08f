"""The REST surface's one error type: a refusal that carries the ACS answer to give.

Every refusal on the REST surface (bad signature, unknown call, invalid argument...) is raised as
a :class:`RestError`; the HTTP adapter (gateway.rest.server) turns it into the status and the
``{"error": {"code": ..., "message": ...}}`` body the ACS SDK expects (ACS_REST.md section 1,
model ``CommunicationErrorResponse``: ``code`` is a string, e.g. ``"8522"``).

Conventions: 400/"8523" invalid argument (malformed JSON, missing field, out of range),
404/"8522" unknown call/participant/recording, 400/"8585" action invalid in the call's state,
409/"8519" conflicting action, 401/"Denied" HMAC failure, 400/"UnsupportedApiVersion" unknown
api-version.
"""

from __future__ import annotations

__all__ = ["RestError"]


class RestError(Exception):
    """An ACS error answer: HTTP status + {"error": {"code": str, "message": str}}."""

    status: int
    code: str
    message: str

    def __init__(self, status: int, code: str, message: str) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"an error answer needs a 4xx or 5xx status, not {status}")
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, object]:
        """The JSON error body: {"error": {"code": ..., "message": ...}}."""
        return {"error": {"code": self.code, "message": self.message}}

    def __str__(self) -> str:
        return f"{self.status} ({self.code}) {self.message}"
