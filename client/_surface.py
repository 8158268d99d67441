"""One client surface: each operation is declared once and both clients run it.

An operation is a *plan function*, ``f(core, /, *args, timeout=None) -> Plan[R]``,
with its real signature and docstring (:mod:`._ops`, :mod:`.historian`).
:class:`operation` turns it into a method of both clients: on a
:class:`SyncDriver` (``Client``) a blocking method returning ``R``, on an
:class:`AsyncDriver` (``AsyncClient``) a coroutine method returning ``R``. The
generated methods carry the plan function's signature (``self`` in place of
``core``) and docstring, so ``help(Client.query)`` and ``inspect`` show them;
the overloads of ``__get__`` give mypy and IDEs the same parameters and the
result type of each client. ``timeout`` is read by the driver, not the plan.

:class:`ClientBase` holds what both clients are made of: the constructor, the
:class:`~._core.ClientCore` and the ``write_point`` state
(:class:`~._points.PointBatches`). A transport subclasses :class:`SyncDriver`
or :class:`AsyncDriver`, implements ``_drive`` and its connection, and never
restates an operation.
"""

from __future__ import annotations

import functools
import inspect
import ssl
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import MethodType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from ._core import DEFAULT_URL, MAX_POINTS_PER_FRAME, ClientCore, Plan
from ._points import PointBatches

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
A = TypeVar("A")
T = TypeVar("T")


class ClientBase:
    """Settings -> core and ``write_point`` state; ``_setup`` is the transport's part.

    ``timeout`` is the default for every call (seconds, ``None`` = wait
    forever); each method also takes ``timeout=``. ``url`` may name several
    servers (``xtsdb://h1:7878,h2:7878`` or a list of URLs): the client connects
    to the first that answers (in a random order with ``shuffle_hosts``) and,
    when its connection is lost, to another (:mod:`._hosts`).

    ``read_your_writes`` (cluster mode, docs/cluster.md): each read (query,
    aggregate, last, interpolate, plot) carries the sequence of the latest
    write acknowledged to this client by ``write``/``write_many``, and the
    replica answering waits until it has applied that far.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        timeout: float | None = 10.0,
        token: str | None = None,
        retry_writes: bool = False,
        batch_size: int = 10_000,
        flush_interval: float = 0.1,
        max_in_flight: int = 8,
        max_points_per_frame: int = MAX_POINTS_PER_FRAME,
        tls: bool | ssl.SSLContext | None = None,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        shuffle_hosts: bool = False,
        read_your_writes: bool = False,
    ) -> None:
        self._points = PointBatches[Any](batch_size, flush_interval)  # checks first
        core = (url, token, retry_writes, max_in_flight, max_points_per_frame, tls, ca, cert, key)
        self._core = ClientCore(*core, shuffle_hosts, read_your_writes)
        self.timeout = timeout
        self.reconnects = 0
        """How many times a broken connection was replaced."""
        self._setup()

    def _setup(self) -> None:
        """The transport's own state (and, for the blocking client, the connection)."""

    @property
    def _closed(self) -> bool:
        return self._points.closed

    @property
    def url(self) -> str:
        """The server in use (of those given), token redacted."""
        return self._core.url

    @property
    def server(self) -> str:
        """The server's name and version from its hello response."""
        return self._core.server

    @property
    def max_frame(self) -> int:
        """The largest frame the server accepts, from its hello response."""
        return self._core.max_frame


class SyncDriver(ClientBase):
    """A client whose operations block: ``_drive`` runs a plan to its result."""

    def _drive(self, plan: Plan[T], timeout: float | None) -> T:
        raise NotImplementedError


class AsyncDriver(ClientBase):
    """A client whose operations are coroutines: ``_drive`` awaits a plan's result."""

    async def _drive(self, plan: Plan[T], timeout: float | None) -> T:
        raise NotImplementedError


def _blocking(plan: Callable[..., Plan[Any]]) -> Callable[..., Any]:
    def method(self: SyncDriver, *args: Any, **kwargs: Any) -> Any:
        return self._drive(plan(self._core, *args, **kwargs), kwargs.get("timeout"))

    return _signed(method, plan)


def _coroutine(plan: Callable[..., Plan[Any]]) -> Callable[..., Any]:
    async def method(self: AsyncDriver, *args: Any, **kwargs: Any) -> Any:
        return await self._drive(plan(self._core, *args, **kwargs), kwargs.get("timeout"))

    return _signed(method, plan)


def _signed(method: Callable[..., Any], plan: Callable[..., Plan[Any]]) -> Callable[..., Any]:
    """``method`` with the name, docstring and signature of ``plan`` (``self`` for the
    core, and the plan's result as the result: awaited, for the coroutine method)."""
    functools.update_wrapper(method, plan)
    sig = inspect.signature(plan)
    _core, *params = sig.parameters.values()
    result = sig.return_annotation
    if isinstance(result, str) and result.startswith("Plan[") and result.endswith("]"):
        result = result[len("Plan[") : -1]
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[self_param, *params], return_annotation=result
    )
    return method


class _Methods:
    """The runtime of a declared operation: its blocking and its coroutine method."""

    def __init__(self, plan: Callable[..., Plan[Any]]) -> None:
        self.plan = plan
        self.__doc__ = plan.__doc__
        self._blocking = _blocking(plan)
        self._coroutine = _coroutine(plan)

    def _get(self, obj: object | None, owner: type[Any] | None) -> Any:
        kind = type(obj) if owner is None else owner
        fn = self._coroutine if issubclass(kind, AsyncDriver) else self._blocking
        return fn if obj is None else MethodType(fn, obj)


class operation(_Methods, Generic[P, R]):
    """Declare a client operation from its plan function (see the module docstring)."""

    def __init__(self, plan: Callable[Concatenate[ClientCore, P], Plan[R]]) -> None:
        super().__init__(plan)

    @overload
    def __get__(
        self, obj: None, owner: type[AsyncDriver]
    ) -> Callable[Concatenate[AsyncDriver, P], Coroutine[Any, Any, R]]: ...
    @overload
    def __get__(
        self, obj: None, owner: type[SyncDriver]
    ) -> Callable[Concatenate[SyncDriver, P], R]: ...
    @overload
    def __get__(
        self, obj: AsyncDriver, owner: type[Any] | None = None
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __get__(self, obj: SyncDriver, owner: type[Any] | None = None) -> Callable[P, R]: ...
    def __get__(self, obj: object | None, owner: type[Any] | None = None) -> Any:
        return self._get(obj, owner)


class typed_operation(_Methods, Generic[S, A]):
    """An operation whose result type depends on its arguments (overloads): ``S`` is
    the blocking method's type and ``A`` the coroutine method's, as callable protocols."""

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Callable[..., Any]: ...
    @overload
    def __get__(self, obj: AsyncDriver, owner: type[Any] | None = None) -> A: ...
    @overload
    def __get__(self, obj: SyncDriver, owner: type[Any] | None = None) -> S: ...
    def __get__(self, obj: object | None, owner: type[Any] | None = None) -> Any:
        return self._get(obj, owner)
