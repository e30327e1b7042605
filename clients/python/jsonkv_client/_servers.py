"""The servers a client talks to, for the sync and the asyncio client alike: the address list,
the TLS and token settings every server gets, which server is in use, and when a failed call
moves on to the next (failover) or a broken watch is opened again.

A client uses one server at a time, the first in the list, and moves to the next when that one
cannot answer: a read after any failure of the server, a write only when its connection could
not be made, since a write whose answer was lost may have been applied and must not be sent
twice. Staying on one server also keeps successive reads on one view of the keyspace."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

import grpc

from ._pb import jsonkv_pb2_grpc as pb_grpc
from .errors import from_rpc_error

DEFAULT_TARGET = "127.0.0.1:50051"

# Pings on an idle connection, so that a watch on a server that vanished without closing the
# connection (host down, network cut) fails and resumes elsewhere instead of waiting for ever.
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # The server's own default limit (--max-message-bytes): a large snapshot fits.
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]

# What gRPC says when a call failed because no connection could be made: it never left.
_NEVER_SENT = "failed to connect to all addresses"

PemSource = bytes | str | os.PathLike[str]


@dataclass(frozen=True)
class Address:
    """One server: `target` is host:port, `tls` whether it was given as https://."""

    target: str
    tls: bool

    def __str__(self) -> str:
        return ("https://" if self.tls else "http://") + self.target


def parse_addresses(addresses: str | Sequence[str]) -> list[Address]:
    """`http://host:port`, `https://host:port` (TLS) or bare `host:port` (plaintext), several
    separated by commas or given as a list."""
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    parsed = []
    for item in items or [""]:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(
                f"bad server address list {addresses!r}: give one or more addresses separated "
                "by commas, none of them empty"
            )
        text = item.strip()
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "http", text
        if scheme not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(
                f"bad server address {text!r}: give host:port, http://host:port or "
                "https://host:port"
            )
        parsed.append(Address(rest, scheme == "https"))
    return parsed


def read_pem(source: PemSource, what: str) -> bytes:
    """PEM bytes as given, or read from the file a str or path names."""
    if isinstance(source, bytes):
        return source
    try:
        with open(source, "rb") as file:
            return file.read()
    except OSError as error:
        raise ValueError(f"cannot read the {what} file {os.fspath(source)}: {error}") from error


@dataclass(frozen=True)
class Settings:
    """How to reach every server: the TLS credentials of https:// addresses (None: none is
    https) and the token's metadata, validated once when the client is made."""

    addresses: list[Address]
    credentials: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...]

    @classmethod
    def make(
        cls,
        addresses: str | Sequence[str],
        token: str | None,
        ca: PemSource | None,
        cert: PemSource | None,
        key: PemSource | None,
    ) -> Settings:
        parsed = parse_addresses(addresses)
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs its key: give both cert and key")
        if ca is not None or cert is not None:
            plain = [a for a in parsed if not a.tls]
            if plain:
                raise ValueError(
                    f"a CA or client certificate was given, but {plain[0]} is not an https:// "
                    "address"
                )
        credentials = None
        if any(a.tls for a in parsed):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=None if ca is None else read_pem(ca, "CA"),
                private_key=None if key is None else read_pem(key, "client key"),
                certificate_chain=None if cert is None else read_pem(cert, "client certificate"),
            )
        return cls(parsed, credentials, bearer_metadata(token))


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The `authorization: Bearer TOKEN` header every call carries, if there is a token."""
    if token is None:
        return ()
    if (
        not isinstance(token, str)
        or not token
        or any(c.isspace() or not c.isprintable() for c in token)
    ):
        raise ValueError("a token is a non-empty string without spaces or control characters")
    return (("authorization", f"Bearer {token}"),)


class CallKind(Enum):
    """What a call may do to the keyspace, which decides when it may go to another server."""

    # Get, list, opening a watch, keep-alive: changes nothing, so after any failure of the
    # server (down, shutting down, a broken connection) the next server is asked.
    READ = "read"
    # Insert, delete, patch, txn, grant, revoke: a server may have applied it even if its
    # answer was lost, so it goes to another server only when it never left.
    WRITE = "write"


def never_sent(error: grpc.RpcError) -> bool:
    return error.code() == grpc.StatusCode.UNAVAILABLE and _NEVER_SENT in (error.details() or "")  # type: ignore[attr-defined]


def _is_behind(error: grpc.RpcError) -> bool:
    """UNAVAILABLE because the server has not reached the revision asked for: every server
    was already asked and waited its limit, so trying again would hide a floor never met."""
    return from_rpc_error(error).reason == "REVISION_NOT_REACHED"


def is_retryable(error: grpc.RpcError) -> bool:
    """Whether a failed call is worth making again, on this server or the next: the server
    went away, the connection broke, or no answer came in time."""
    code = error.code()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        return not _is_behind(error)
    return code in (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


def may_try_another(kind: CallKind, error: grpc.RpcError) -> bool:
    return never_sent(error) or (kind is CallKind.READ and is_retryable(error))


Channel = TypeVar("Channel")


class Servers(Generic[Channel]):
    """One channel and stub per server, in the order given, and which one is in use. Shared
    by every call of a client; the index is the only state calls change."""

    def __init__(
        self,
        settings: Settings,
        open_channel: Callable[..., Channel],
        open_secure: Callable[..., Channel],
    ):
        self.addresses = settings.addresses
        self.channels: list[Channel] = [
            open_secure(a.target, settings.credentials, options=_CHANNEL_OPTIONS)
            if a.tls
            else open_channel(a.target, options=_CHANNEL_OPTIONS)
            for a in settings.addresses
        ]
        self.stubs = [pb_grpc.JsonKvStub(channel) for channel in self.channels]
        self._current = 0
        self._lock = threading.Lock()

    @property
    def current(self) -> int:
        return self._current

    def move_past(self, index: int) -> None:
        """Makes the server after `index` the one in use, unless another call has moved on
        from `index` already: concurrent failures of one server must not skip the next."""
        with self._lock:
            if self._current == index:
                self._current = (index + 1) % len(self.stubs)


class Attempts:
    """The tries of one call: each server at most once, starting with the one in use, all
    within the call's `timeout` (None: no limit). The sync and asyncio clients loop:

        attempts = Attempts(servers, kind, timeout)
        while True:
            index, timeout_left = attempts.next()
            try: return call(servers.stubs[index], timeout_left)
            except grpc.RpcError as error:
                if not attempts.try_another(index, error): raise ...
    """

    def __init__(self, servers: Servers[Any], kind: CallKind, timeout: float | None):
        self._servers = servers
        self._kind = kind
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._left = len(servers.stubs)

    def next(self) -> tuple[int, float | None]:
        self._left -= 1
        left = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        return self._servers.current, left

    def try_another(self, index: int, error: grpc.RpcError) -> bool:
        """Whether to try the next server after `error` on the server `index`. A server that
        did not answer in the call's time is left like one that is down: a hung process keeps
        its connection open, so keepalive alone would not notice."""
        out_of_time = self._deadline is not None and time.monotonic() >= self._deadline
        if out_of_time and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
            self._servers.move_past(index)
            return False
        if self._left > 0 and not out_of_time and may_try_another(self._kind, error):
            self._servers.move_past(index)
            return True
        return False


class Backoff:
    """Exponential delays between a watch's reconnects, from 0.1 s to 2 s, jittered so that
    the watchers of one restarted server do not all come back in the same instant."""

    FIRST = 0.1
    CAP = 2.0

    def __init__(self) -> None:
        self._step = self.FIRST

    def next_delay(self) -> float:
        delay = self._step * random.uniform(0.5, 1.0)
        self._step = min(self._step * 2, self.CAP)
        return delay

    def reset(self) -> None:
        self._step = self.FIRST
