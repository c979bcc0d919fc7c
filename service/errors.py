"""Domain errors: each carries the HTTP status and the JSON code it maps to."""


class ServiceError(Exception):
    """Base of every error a caller may handle; its message must never hold patient data."""

    status = 500
    code = "internal"


class InvalidInputError(ServiceError):
    status = 400
    code = "invalid_input"


class UnauthorizedError(ServiceError):
    status = 401
    code = "unauthorized"


class PermissionDeniedError(ServiceError):
    status = 403
    code = "permission_denied"


class NotFoundError(ServiceError):
    status = 404
    code = "not_found"


class ConflictError(ServiceError):
    status = 409
    code = "conflict"


class GoneError(ServiceError):
    status = 410
    code = "gone"


class RateLimitedError(ServiceError):
    """Too many failed attempts from one address: try again after `retry_after` seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnavailableError(ServiceError):
    """A dependency (Firestore, Storage, KMS, Graph API) did not answer: the caller may retry."""

    status = 503
    code = "unavailable"
    # Sent as Retry-After: about the time a dependency call takes to give up (5 to 10 s).
    retry_after = 10


class KeysetMissingError(UnavailableError):
    """No keyset exists yet: `python -m service keys init` creates it."""


class KeyMaterialUnavailableError(UnavailableError):
    """The keyset could not be read or unwrapped (KMS or Storage down, or access denied)."""


class ConfigError(Exception):
    """The configuration is missing or unsafe; lists every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))
