"""jsonkv_client: the Python client of jsonkv, a JSON key-value database served over gRPC
(service jsonkv.v1.JsonKv; proto/jsonkv/v1/jsonkv.proto in the jsonkv repository is the
contract).

    import jsonkv_client

    with jsonkv_client.connect("127.0.0.1:50051") as kv:
        kv.insert("greeting", {"hello": "world", "big": 2**64 + 1})
        print(kv.get("greeting").value)

Values travel as JSON text (`value_json`, answers asked for as VALUE_ENCODING_JSON), the
contract's lossless path: Python's json module keeps integers of any size exactly, and every
Entry carries the exact text as `json`. `jsonkv_client.aio` is the same client for asyncio.

Layout:
- client.py: the sync Client, and the Watch, Lease and Lock its calls hand out.
- aio.py: AsyncClient, AsyncWatch, AsyncLease and AsyncLock, the same on grpc.aio.
- errors.py: JsonKvError and a subclass per gRPC status code, built from a failed call.
- _requests.py: the requests both clients send; Compare, Get, Insert, Delete, Patch, TxnResult.
- _entries.py: what the server answers, as Entry, Snapshot and Event; JSON text conversion.
- _resume.py: where a watch stands, so that a broken stream resumes with no gap or repeat.
- _servers.py: addresses, TLS and token settings, and which server a call goes to (failover).
- _locking.py: the decisions of the lock recipe both clients follow.
- _pb/: the gRPC stubs, generated from the proto when the package is built.
"""

from importlib import metadata as _metadata

from ._entries import Entry, Event, Snapshot, to_json
from ._pb import jsonkv_pb2 as pb
from ._pb import jsonkv_pb2_grpc as pb_grpc
from ._requests import UNSET, Compare, Delete, Get, Insert, Op, Patch, TxnResult
from ._servers import DEFAULT_TARGET
from .client import DEFAULT_TIMEOUT, STORE_ID_HEADER, Client, Lease, Lock, Watch, connect
from .errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    ErrorInfo,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    JsonKvError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ProtocolError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)

# The installed distribution's version, which matches the server's (the workspace version).
__version__ = _metadata.version("jsonkv-client")

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "STORE_ID_HEADER",
    "UNSET",
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "Client",
    "Compare",
    "DeadlineExceededError",
    "Delete",
    "Entry",
    "ErrorInfo",
    "Event",
    "FailedPreconditionError",
    "FieldViolation",
    "Get",
    "Insert",
    "InternalError",
    "InvalidArgumentError",
    "JsonKvError",
    "Lease",
    "Lock",
    "NotFoundError",
    "Op",
    "OutOfRangeError",
    "Patch",
    "PermissionDeniedError",
    "ProtocolError",
    "ResourceExhaustedError",
    "Snapshot",
    "TxnResult",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "Watch",
    "connect",
    "pb",
    "pb_grpc",
    "to_json",
]
