"""Domain errors; each class carries its HTTP status, rendered by one handler in main.py.

AppError (400)
├── Unauthorized (401)   missing, malformed, forged or expired credentials
├── Forbidden (403)      acting on someone else's article or comment
├── NotFound (404)       unknown slug, username or comment id
├── RequestTimeout (408) a streamed upload that stopped sending
├── Conflict (409)       username or email already taken
├── PayloadTooLarge (413)
├── Invalid (422)        input that passed the schema but not the domain rules
└── TooManyRequests (429) answered with Retry-After: `retry_after_s`
"""

from typing import ClassVar


class AppError(Exception):
    """Base class; `str(exc)` is the message shown to the client."""

    status_code: ClassVar[int] = 400


class Unauthorized(AppError):
    status_code = 401


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class RequestTimeout(AppError):
    status_code = 408


class Conflict(AppError):
    status_code = 409


class PayloadTooLarge(AppError):
    status_code = 413


class Invalid(AppError):
    status_code = 422


class TooManyRequests(AppError):
    status_code = 429

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
