"""A fault-injecting HTTP proxy that sits between a Kubernetes client and an API server (or its double).

Why: the operator must survive what real API servers and networks do to it: 5xx errors, 409 conflicts
on writes, slow responses, requests that hang past the client's timeout, writes whose response is lost
after the server applied them, and watch streams that end or break mid-way. The proxy decides each
fault from a seeded random plan, counts every fault it injects, and listens on 127.0.0.1 only.

Two ways to run it: `FaultProxy` inside an asyncio loop (`await proxy.start()`), or `ProxyThread`,
which runs the same proxy in its own loop on a background thread for synchronous tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "content-length", "content-encoding", "host",
    }
)

# Names of the faults, as counted in `FaultProxy.counts`.
ERROR_500 = "error_500"
CONFLICT_409 = "conflict_409"
DELAY = "delay"
TIMEOUT = "timeout"
LOST_RESPONSE = "lost_response"
WATCH_END = "watch_end"  # the stream ends cleanly early (like a server-side timeout)
WATCH_ABORT = "watch_abort"  # the connection breaks mid-stream
FAULT_KINDS = (ERROR_500, CONFLICT_409, DELAY, TIMEOUT, LOST_RESPONSE, WATCH_END, WATCH_ABORT)


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities of each fault per request, drawn from one seeded generator.

    Faults exclude each other per request in this order: timeout, 500, 409, lost response (writes
    only); a delay may come on top of a forwarded request. Watch requests are only ever delayed,
    ended early or aborted. A 409 comes only where a real API server can answer one: a PUT, or a
    PATCH carrying a resourceVersion (an optimistic lock); a plain merge patch never conflicts.
    """

    seed: int = 0
    error_rate: float = 0.0
    conflict_rate: float = 0.0
    delay_rate: float = 0.0
    delay_max_s: float = 0.2
    timeout_rate: float = 0.0
    timeout_hold_s: float = 3.0  # hold the request this long, then answer 504 (set above the client timeout)
    lost_response_rate: float = 0.0
    watch_drop_rate: float = 0.0
    watch_drop_after_max_s: float = 1.0  # a dropped watch lives a random time up to this
    watch_abort_share: float = 0.5  # of dropped watches, how many break instead of ending cleanly
    exclude_paths: tuple[str, ...] = field(default=())  # path prefixes never faulted

    @classmethod
    def chaos(cls, seed: int, intensity: float = 1.0, timeout_hold_s: float = 3.0) -> FaultPlan:
        """A mixed plan used by the chaos tests: every kind of fault, scaled by intensity."""
        return cls(
            seed=seed,
            error_rate=0.05 * intensity,
            conflict_rate=0.08 * intensity,
            delay_rate=0.15 * intensity,
            delay_max_s=0.25,
            timeout_rate=0.01 * intensity,
            timeout_hold_s=timeout_hold_s,
            lost_response_rate=0.04 * intensity,
            watch_drop_rate=0.4 * intensity,
            watch_drop_after_max_s=2.0,
        )

    def quiet(self) -> FaultPlan:
        """The same plan with every fault switched off (to let a system converge)."""
        return replace(
            self, error_rate=0.0, conflict_rate=0.0, delay_rate=0.0, timeout_rate=0.0,
            lost_response_rate=0.0, watch_drop_rate=0.0,
        )


def _status(code: int, reason: str, message: str) -> web.Response:
    """A Kubernetes `Status` body, as the API server answers errors."""
    body = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }
    return web.Response(status=code, text=json.dumps(body), content_type="application/json")


def _can_conflict(method: str, body: bytes) -> bool:
    """A PUT, or a PATCH with a resourceVersion precondition: the requests a server may refuse with 409."""
    return method == "PUT" or (method == "PATCH" and b'"resourceVersion"' in body)


def _is_watch(request: web.Request) -> bool:
    return request.query.get("watch", "").lower() in ("1", "true")


class FaultProxy:
    """The proxy itself: forwards every request to `upstream`, injecting faults per `plan`."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None, host: str = "127.0.0.1"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"host: the fault proxy listens on loopback only, not {host!r}")
        self.upstream = upstream.rstrip("/")
        self.plan = plan or FaultPlan()
        self.host = host
        self.port = 0
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.forwarded = 0
        # Distinct Authorization header values seen: lets a test prove which credential was in use
        # before it greps logs and objects for it.
        self.authorizations: set[str] = set()
        # (method, path, watch) of every request: what the client really does (e.g. to check RBAC).
        self.calls: Counter[tuple[str, str, bool]] = Counter()
        self._rng = random.Random(self.plan.seed)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def faults(self) -> int:
        return sum(self.counts.values())

    def set_plan(self, plan: FaultPlan) -> None:
        """Switch plans (e.g. to `plan.quiet()`); the generator is re-seeded from the new plan."""
        self.plan = plan
        self._rng = random.Random(plan.seed)

    async def start(self) -> str:
        self._closing = asyncio.Event()
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, connect=5)
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server's sockets
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _excluded(self, path: str) -> bool:
        return any(path.startswith(prefix) for prefix in self.plan.exclude_paths)

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.calls[(request.method, request.path, _is_watch(request))] += 1
        if "Authorization" in request.headers and len(self.authorizations) < 16:
            self.authorizations.add(request.headers["Authorization"])
        plan = self.plan
        body = await request.read()
        if self._excluded(request.path):
            return await self._forward(request, body)
        if _is_watch(request):
            return await self._watch(request, body)
        # One decision per request, drawn in a fixed order so a seed gives one sequence of draws.
        timeout = self._roll(plan.timeout_rate)
        error = self._roll(plan.error_rate)
        conflict = self._roll(plan.conflict_rate) and _can_conflict(request.method, body)
        lost = self._roll(plan.lost_response_rate) and request.method in WRITE_METHODS
        delay = self._rng.uniform(0.0, plan.delay_max_s) if self._roll(plan.delay_rate) else 0.0
        if timeout:
            self.counts[TIMEOUT] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), plan.timeout_hold_s)
            return _status(504, "Timeout", "fault proxy: the request was held past its deadline")
        if error:
            self.counts[ERROR_500] += 1
            return _status(500, "InternalError", "fault proxy: injected internal error")
        if conflict:
            self.counts[CONFLICT_409] += 1
            return _status(
                409, "Conflict",
                "fault proxy: Operation cannot be fulfilled: the object has been modified; "
                "please apply your changes to the latest version and try again",
            )
        if delay:
            self.counts[DELAY] += 1
            await asyncio.sleep(delay)
        response = await self._forward(request, body)
        if lost and response.status < 400:
            self.counts[LOST_RESPONSE] += 1
            return _status(500, "InternalError", "fault proxy: the write was applied but its response lost")
        return response

    def _upstream_headers(self, request: web.Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, data=body or None,
                headers=self._upstream_headers(request), allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                if upstream.headers.get("Content-Encoding"):
                    headers["Content-Encoding"] = upstream.headers["Content-Encoding"]
        except aiohttp.ClientError as error:
            return _status(502, "ServiceUnavailable", f"fault proxy: upstream unreachable: {error}")
        self.forwarded += 1
        return web.Response(status=upstream.status, body=payload, headers=headers)

    async def _watch(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Stream a watch through line by line; a dropped one ends or breaks after a random time."""
        plan = self.plan
        drop = self._roll(plan.watch_drop_rate)
        drop_after = self._rng.uniform(0.05, plan.watch_drop_after_max_s) if drop else None
        abort = drop and self._rng.random() < plan.watch_abort_share
        delay = self._rng.uniform(0.0, plan.delay_max_s) if self._roll(plan.delay_rate) else 0.0
        if delay:
            self.counts[DELAY] += 1
            await asyncio.sleep(delay)
        assert self._session is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drop_after if drop_after is not None else None
        try:
            upstream_cm = self._session.request(
                request.method, self.upstream + request.path_qs, data=body or None,
                headers=self._upstream_headers(request),
            )
            upstream = await upstream_cm.__aenter__()
        except aiohttp.ClientError as error:
            return _status(502, "ServiceUnavailable", f"fault proxy: upstream unreachable: {error}")
        try:
            self.forwarded += 1
            if upstream.status >= 300:
                return web.Response(status=upstream.status, body=await upstream.read(),
                                    content_type=upstream.content_type)
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    line = await asyncio.wait_for(upstream.content.readline(), remaining)
                except TimeoutError:
                    break
                except aiohttp.ClientError:
                    return response  # upstream broke: pass the break on
                try:
                    if not line:
                        await response.write_eof()
                        return response  # upstream ended the stream itself
                    await response.write(line)
                except ConnectionError:
                    return response  # the client went away (e.g. a killed operator): nothing to do
            # The planned drop.
            if abort:
                self.counts[WATCH_ABORT] += 1
                if request.transport is not None:
                    request.transport.abort()
            else:
                self.counts[WATCH_END] += 1
                with contextlib.suppress(ConnectionError):
                    await response.write_eof()
            return response
        finally:
            upstream.close()
            with contextlib.suppress(Exception):
                await upstream_cm.__aexit__(None, None, None)


async def _finish_tasks() -> None:
    """Cancel and await what still runs in this loop (watch handlers the server's shutdown left
    suspended), so their cleanup runs while the loop is open and not when they are collected later."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ProxyThread:
    """A `FaultProxy` running in its own event loop on a daemon thread, for synchronous tests."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None):
        self._upstream = upstream
        self._plan = plan
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self.proxy: FaultProxy | None = None

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> str:
        self._thread.start()

        async def make() -> FaultProxy:
            proxy = FaultProxy(self._upstream, self._plan)
            await proxy.start()
            return proxy

        self.proxy = self._call(make())
        return self.proxy.url

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def counts(self) -> Counter[str]:
        """A snapshot of the faults injected so far."""
        assert self.proxy is not None

        async def snap() -> Counter[str]:
            return Counter(self.proxy.counts)  # type: ignore[union-attr]

        return self._call(snap())

    def calls(self) -> Counter[tuple[str, str, bool]]:
        assert self.proxy is not None

        async def snap() -> Counter[tuple[str, str, bool]]:
            return Counter(self.proxy.calls)  # type: ignore[union-attr]

        return self._call(snap())

    def authorizations(self) -> set[str]:
        assert self.proxy is not None

        async def snap() -> set[str]:
            return set(self.proxy.authorizations)  # type: ignore[union-attr]

        return self._call(snap())

    def set_plan(self, plan: FaultPlan) -> None:
        assert self.proxy is not None

        async def swap() -> None:
            self.proxy.set_plan(plan)  # type: ignore[union-attr]

        self._call(swap())

    def stop(self) -> None:
        if self.proxy is not None:
            self._call(self.proxy.stop())
        self._call(_finish_tasks())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ProxyThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
