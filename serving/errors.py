"""ServingError: a failure carrying the gRPC status code TF Serving would answer with."""
from __future__ import annotations

import grpc


class ServingError(Exception):
    """A request the server refuses; ``code`` is a ``grpc.StatusCode`` and the message says precisely why."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"
