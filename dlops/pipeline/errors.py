"""What the pipeline refuses: a request the client must change.

Each refusal carries the HTTP status the protocols answer it with and a kind for the metrics;
the HTTP layer (dlops/http/) turns it into ``{"error": message}`` with that status.
"""

from __future__ import annotations

from http import HTTPStatus


class ClientError(Exception):
    """A request the client must change: the message says what was wrong and what is expected."""

    def __init__(
        self, message: str, status: int = HTTPStatus.BAD_REQUEST, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = HTTPStatus(status)
        # What went wrong, for the dlops_errors_total{kind} metric: "no_ink", "not_an_image"...
        self.kind = kind or HTTPStatus(status).name.lower()
        # Set once dlops_errors_total has counted it, so that no layer counts it twice.
        self.counted = False
