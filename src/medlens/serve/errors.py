"""The one error type of the service: a message for the client and the HTTP status that goes with it."""

from __future__ import annotations

from medlens.errors import MedlensError


class RequestError(MedlensError):
    """A request the service refuses; ``status`` is its HTTP status, the message a single line for the client.

    400 bad request (empty upload, unsafe archive member), 401 missing or wrong token, 404 unknown bundle,
    413 too large (bytes, pixels, an archive that expands too far), 415 not an image format medlens reads,
    422 an image this bundle cannot take (a volume for a 2D bundle, a DICOM file without pixels), 504 the
    request ran past its time limit.
    """

    def __init__(self, status: int, message: str):
        super().__init__(" ".join(str(message).split()))  # one line: no newline reaches the client
        self.status = int(status)
