"""The errors the client raises: one exception class per gRPC status code the contract uses,
each carrying the code, the server's message and its structured details (google.rpc ErrorInfo
and BadRequest), built from a failed call in one place for the sync and asyncio clients."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2

# The trailer in which gRPC servers send the google.rpc.Status with its details.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class ErrorInfo:
    """The google.rpc.ErrorInfo detail: a machine-readable `reason` (REVISION_MISMATCH,
    STORE_MISMATCH, REVISION_COMPACTED, ...) and its `metadata` (such as
    `current_mod_revision`), as strings."""

    reason: str
    domain: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (a google.rpc.BadRequest field violation)."""

    field: str
    description: str


class JsonKvError(Exception):
    """A call that failed: `code` is its gRPC status code, `details` the server's message,
    `info` the ErrorInfo detail (None if it had none) and `field_violations` the fields of the
    request that were refused. Catch a subclass (NotFoundError, FailedPreconditionError, ...) to
    handle one code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode | None = None,
        info: ErrorInfo | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(details)
        if code is not None:
            self.code = code
        self.details = details
        self.info = info
        self.field_violations = field_violations

    @property
    def reason(self) -> str | None:
        """`info.reason`, or None when the error has no ErrorInfo."""
        return None if self.info is None else self.info.reason

    def __str__(self) -> str:
        reason = f" ({self.info.reason})" if self.info else ""
        return f"{self.code.name}{reason}: {self.details}"


class CancelledError(JsonKvError):
    code = grpc.StatusCode.CANCELLED


class InvalidArgumentError(JsonKvError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(JsonKvError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(JsonKvError, KeyError):
    code = grpc.StatusCode.NOT_FOUND

    # KeyError quotes its message; this one reads as the others do.
    __str__ = JsonKvError.__str__


class AlreadyExistsError(JsonKvError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(JsonKvError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(JsonKvError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(JsonKvError):
    """A condition did not hold: a compare-and-swap lost (REVISION_MISMATCH), a JSON Patch
    `test` failed, or a watch resumed on a store that is not the one it watched
    (STORE_MISMATCH, STORE_BEHIND: start a new watch from a snapshot)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(JsonKvError):
    code = grpc.StatusCode.ABORTED


class OutOfRangeError(JsonKvError):
    """A watch resumed from a revision the server's history no longer holds."""

    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(JsonKvError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(JsonKvError):
    code = grpc.StatusCode.INTERNAL


class UnavailableError(JsonKvError):
    code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(JsonKvError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ProtocolError(JsonKvError):
    """The server broke the contract (say, a snapshot on a resumed watch): the watch cannot go
    on without risking a gap."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[JsonKvError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        UnauthenticatedError,
    )
}


def from_rpc_error(error: grpc.RpcError) -> JsonKvError:
    """The JsonKvError for a failed call of the sync or the asyncio API (both raise
    grpc.RpcError objects that are also calls: `code()`, `details()`, `trailing_metadata()`)."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    details: str = error.details() or ""  # type: ignore[attr-defined]
    info, violations = _details(error.trailing_metadata())  # type: ignore[attr-defined]
    cls = _BY_CODE.get(code, JsonKvError)
    return cls(details, code=code, info=info, field_violations=violations)


def _details(
    trailers: object,
) -> tuple[ErrorInfo | None, tuple[FieldViolation, ...]]:
    for key, value in trailers or ():  # type: ignore[attr-defined]
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            return _decode(value)
    return None, ()


def _decode(raw: bytes) -> tuple[ErrorInfo | None, tuple[FieldViolation, ...]]:
    status = status_pb2.Status.FromString(raw)
    info = None
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            unpacked = error_details_pb2.ErrorInfo()
            detail.Unpack(unpacked)
            info = ErrorInfo(unpacked.reason, unpacked.domain, dict(unpacked.metadata))
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return info, tuple(violations)
