"""The requests the clients send, built one way for the sync and the asyncio client: the
operations of a transaction (Get, Insert, Delete, Patch, each also the request of the call of
its name), the conditions of one (Compare), what a transaction returns (TxnResult), and the
requests of List and the watches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from ._entries import Entry, to_json
from ._pb import jsonkv_pb2 as pb

_JSON = pb.VALUE_ENCODING_JSON


class _Unset:
    """Marks an argument not given where None is a value (JSON null)."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()

_COMPARE_RESULTS = {
    "==": pb.COMPARE_RESULT_EQUAL,
    "!=": pb.COMPARE_RESULT_NOT_EQUAL,
    "<": pb.COMPARE_RESULT_LESS,
    ">": pb.COMPARE_RESULT_GREATER,
}
_COMPARE_TARGETS = ("mod_revision", "create_revision", "version", "value", "exists")


def _check_key(key: object, what: str = "key") -> None:
    # A non-string would fail deep inside protobuf with a message about field types.
    if not isinstance(key, str):
        raise TypeError(f"a {what} is a str, not {type(key).__name__} {key!r}")


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction (see `Client.txn`): the key's `target <result> given`, with
    `result` one of "==" (the default), "!=", "<", ">". `Compare("a", mod_revision=5)` holds when
    a's mod revision is 5; `Compare("a", "<", version=3)` when a was written fewer than 3 times
    since it was created. Exactly one target: `mod_revision`, `create_revision`, `version` (all 0
    for an absent key), `value` (the document, compared as JSON; an absent key equals none) or
    `exists`; `value` and `exists` take "==" and "!=" only."""

    key: str
    result: str = "=="
    _: KW_ONLY
    mod_revision: int | None = None
    create_revision: int | None = None
    version: int | None = None
    value: Any = UNSET
    exists: bool | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        if self.result not in _COMPARE_RESULTS:
            raise ValueError(f"Compare result {self.result!r} is none of {list(_COMPARE_RESULTS)}")
        given = [name for name in _COMPARE_TARGETS if self._given(name)]
        if len(given) != 1:
            raise ValueError(f"Compare of {self.key!r} needs exactly one target, not {given}")

    def _given(self, name: str) -> bool:
        return getattr(self, name) is not (UNSET if name == "value" else None)

    def to_pb(self) -> pb.Compare:
        compare = pb.Compare(key=self.key, result=_COMPARE_RESULTS[self.result])
        if self.value is not UNSET:
            compare.value_json = to_json(self.value)
        else:
            (name,) = (name for name in _COMPARE_TARGETS if self._given(name))
            setattr(compare, name, getattr(self, name))
        return compare


@dataclass(frozen=True)
class Get:
    """Reads `key`, in a transaction. Its result is the Entry, or None if the key is absent."""

    key: str

    def __post_init__(self) -> None:
        _check_key(self.key)

    def to_pb(self) -> pb.GetRequest:
        return pb.GetRequest(key=self.key, value_encoding=_JSON)


@dataclass(frozen=True)
class Insert:
    """Stores `value` at `key`, as `Client.insert`. Its result is the InsertResponse. With
    `json`, stores that JSON text as written instead (give `value` as UNSET or leave it)."""

    key: str
    value: Any = UNSET
    _: KW_ONLY
    json: str | None = None
    expected_mod_revision: int | None = None
    lease: int = 0

    def __post_init__(self) -> None:
        _check_key(self.key)
        if (self.value is UNSET) == (self.json is None):
            raise ValueError(f"Insert of {self.key!r} needs exactly one of value and json")

    def to_pb(self) -> pb.InsertRequest:
        return pb.InsertRequest(
            key=self.key,
            value_json=to_json(self.value) if self.json is None else self.json,
            expected_mod_revision=self.expected_mod_revision,
            lease=self.lease,
        )


@dataclass(frozen=True)
class Delete:
    """Deletes `key`, as `Client.delete`. Its result is the DeleteResponse."""

    key: str
    _: KW_ONLY
    expected_mod_revision: int | None = None
    allow_missing: bool = False

    def __post_init__(self) -> None:
        _check_key(self.key)

    def to_pb(self) -> pb.DeleteRequest:
        return pb.DeleteRequest(
            key=self.key,
            expected_mod_revision=self.expected_mod_revision,
            allow_missing=self.allow_missing,
        )


@dataclass(frozen=True)
class Patch:
    """Patches `key`'s document, as `Client.patch`: with `merge`, an RFC 7396 merge patch (any
    JSON, None included); with `merge_json`, the same as JSON text sent as written; with
    `json_patch`, an RFC 6902 JSON Patch (a list of operations such as
    `{"op": "add", "path": "/a", "value": 1}`). Exactly one of the three. Its result is the Entry
    after the patch."""

    key: str
    merge: Any = UNSET
    _: KW_ONLY
    merge_json: str | None = None
    json_patch: list[dict[str, Any]] | None = None
    expected_mod_revision: int | None = None
    # None keeps the key's lease (a patch changes the document, not who owns it).
    lease: int | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        given = [
            name
            for name, unset in (
                ("merge", self.merge is UNSET),
                ("merge_json", self.merge_json is None),
                ("json_patch", self.json_patch is None),
            )
            if not unset
        ]
        if len(given) != 1:
            raise ValueError(
                f"Patch of {self.key!r} needs exactly one of merge, merge_json and json_patch, "
                f"not {given}"
            )

    def to_pb(self) -> pb.PatchRequest:
        request = pb.PatchRequest(
            key=self.key,
            expected_mod_revision=self.expected_mod_revision,
            lease=self.lease or 0,
            value_encoding=_JSON,
        )
        if self.merge_json is not None:
            request.merge_json = self.merge_json
        elif self.json_patch is not None:
            request.json_patch = to_json(self.json_patch)
        else:
            request.merge_json = to_json(self.merge)
        return request


Op = Get | Insert | Delete | Patch
# The Op field each operation goes in.
_OP_FIELDS: dict[type, str] = {Get: "get", Insert: "insert", Delete: "delete", Patch: "patch"}


@dataclass(frozen=True)
class TxnResult:
    """What `Client.txn` did: whether every comparison held (`success` ran; else `failure`),
    the revision of its writes (if none, the revision it read at), and one result per operation
    of the branch that ran, in order: an Entry or None for a Get, the InsertResponse or
    DeleteResponse, the Entry after a Patch."""

    succeeded: bool
    revision: int
    results: list[Any]


def _op_pb(op: Op) -> pb.Op:
    kind = _OP_FIELDS.get(type(op))
    if kind is None:
        raise TypeError(f"a transaction operation is a Get, Insert, Delete or Patch, not {op!r}")
    return pb.Op(**{kind: op.to_pb()})


def txn_request(
    compare: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op]
) -> pb.TxnRequest:
    conditions = []
    for condition in compare:
        if not isinstance(condition, Compare):
            raise TypeError(f"a transaction condition is a Compare, not {condition!r}")
        conditions.append(condition.to_pb())
    return pb.TxnRequest(
        compare=conditions,
        success=[_op_pb(op) for op in success],
        failure=[_op_pb(op) for op in failure],
    )


def _op_result(result: pb.OpResult) -> Any:
    """An operation's result as the Client method of its name returns it."""
    kind = result.WhichOneof("response")
    if kind == "get":
        return Entry.from_pb(result.get.kv) if result.get.HasField("kv") else None
    if kind == "patch":
        return Entry.from_pb(result.patch.kv)
    return getattr(result, kind or "")


def txn_result(response: pb.TxnResponse) -> TxnResult:
    return TxnResult(
        response.succeeded, response.revision, [_op_result(r) for r in response.results]
    )


def check_filter(filter: str | None) -> str:
    """A live query's filter as the request field takes it ("": none)."""
    if filter is None:
        return ""
    if not isinstance(filter, str):
        raise TypeError(f"a filter is a str (a CEL expression), not {type(filter).__name__}")
    return filter


def check_fields(fields: Sequence[str] | None) -> tuple[str, ...]:
    """JSON Pointers as the request field takes them (none: the whole document)."""
    if fields is None:
        return ()
    # A str is a sequence too: "/a" would be sent as the pointers "/" and "a".
    if isinstance(fields, str | bytes):
        raise TypeError(f"fields is a sequence of JSON Pointers: give [{fields!r}], not {fields!r}")
    for pointer in fields:
        if not isinstance(pointer, str):
            raise TypeError(f"a field is a str (a JSON Pointer), not {type(pointer).__name__}")
    return tuple(fields)


def list_request(
    prefix: str,
    page_size: int,
    page_token: str,
    min_revision: int,
    filter: str | None = None,
    fields: Sequence[str] | None = None,
) -> pb.ListRequest:
    _check_key(prefix, "prefix")
    if page_size < 0:
        raise ValueError(f"page_size is 0 (the server's default) or more, not {page_size}")
    return pb.ListRequest(
        prefix=prefix,
        page_size=page_size,
        page_token=page_token,
        value_encoding=_JSON,
        min_revision=min_revision,
        filter=check_filter(filter),
        fields=check_fields(fields),
    )


@dataclass(frozen=True)
class WatchTarget:
    """What a watch watches: one key, or every key under a prefix, and whether each event
    carries the key's previous value; for a prefix, also the live query's `filter` ("": none),
    the `fields` each value holds (none: all) and whether puts carry a merge patch (`diff`).
    `request` makes the request that (re)opens it, every time with all of these, so that a
    resumed watch is the same view."""

    key: str
    prefix: bool
    prev_kv: bool
    filter: str = ""
    fields: tuple[str, ...] = ()
    diff: bool = False

    def __post_init__(self) -> None:
        _check_key(self.key, "prefix" if self.prefix else "key")

    @property
    def method(self) -> str:
        return "WatchPrefix" if self.prefix else "WatchKey"

    def request(
        self, start_revision: int, store_id: str
    ) -> pb.WatchKeyRequest | pb.WatchPrefixRequest:
        if self.prefix:
            return pb.WatchPrefixRequest(
                prefix=self.key,
                start_revision=start_revision,
                value_encoding=_JSON,
                store_id=store_id,
                prev_kv=self.prev_kv,
                filter=self.filter,
                fields=self.fields,
                diff=self.diff,
            )
        return pb.WatchKeyRequest(
            key=self.key,
            start_revision=start_revision,
            value_encoding=_JSON,
            store_id=store_id,
            prev_kv=self.prev_kv,
        )
