"""The fault proxy against a tiny aiohttp upstream: each fault happens as planned and is counted."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from faultproxy import (
    CONFLICT_409,
    DELAY,
    ERROR_500,
    LOST_RESPONSE,
    TIMEOUT,
    WATCH_ABORT,
    WATCH_END,
    FaultPlan,
    FaultProxy,
    ProxyThread,
)


class Upstream:
    """A small API-like server: counts hits and writes, and streams watch events until closed."""

    def __init__(self) -> None:
        self.hits = 0
        self.writes = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if request.query.get("watch") == "true":
            response = web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request)
            for n in range(10_000):
                await response.write(json.dumps({"type": "ADDED", "object": {"n": n}}).encode() + b"\n")
                await asyncio.sleep(0.02)
            return response
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            self.writes += 1
            body = await request.json()
            return web.json_response({"echo": body, "method": request.method}, status=201)
        return web.json_response(
            {
                "path": request.path,
                "query": dict(request.query),
                "auth": request.headers.get("Authorization"),
            },
            headers={"X-Upstream": "yes"},
        )

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def run_with(plan: FaultPlan, body: Callable[[FaultProxy, Upstream, aiohttp.ClientSession], Awaitable[None]]):
    """Start an upstream and a proxy in front of it, run `body`, then stop both."""

    async def scenario() -> None:
        upstream = Upstream()
        await upstream.start()
        proxy = FaultProxy(upstream.url, plan)
        await proxy.start()
        try:
            async with aiohttp.ClientSession() as session:
                await body(proxy, upstream, session)
        finally:
            await proxy.stop()
            await upstream.stop()

    asyncio.run(scenario())


def test_passthrough_preserves_method_path_query_headers_and_body() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        async with session.get(proxy.url + "/api/v1/pods?labelSelector=a%3Db",
                               headers={"Authorization": "Bearer x"}) as r:
            assert r.status == 200
            assert r.headers["X-Upstream"] == "yes"
            assert await r.json() == {"path": "/api/v1/pods", "query": {"labelSelector": "a=b"},
                                      "auth": "Bearer x"}
        async with session.patch(proxy.url + "/api/v1/pods/p", json={"k": "v"}) as r:
            assert r.status == 201
            assert await r.json() == {"echo": {"k": "v"}, "method": "PATCH"}
        assert upstream.hits == 2 and upstream.writes == 1
        assert proxy.faults == 0 and proxy.requests == 2 and proxy.forwarded == 2
        assert proxy.authorizations == {"Bearer x"}
        assert proxy.calls == {("GET", "/api/v1/pods", False): 1, ("PATCH", "/api/v1/pods/p", False): 1}

    run_with(FaultPlan(seed=1), body)


def test_error_500_is_answered_by_the_proxy_as_a_kubernetes_status() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        for _ in range(5):
            async with session.get(proxy.url + "/api/v1/pods") as r:
                assert r.status == 500
                status = await r.json()
                assert status["kind"] == "Status" and status["code"] == 500
                assert status["reason"] == "InternalError"
        assert upstream.hits == 0
        assert proxy.counts[ERROR_500] == 5 and proxy.faults == 5

    run_with(FaultPlan(seed=2, error_rate=1.0), body)


def test_conflict_only_on_updates_and_never_reaches_upstream() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        async with session.get(proxy.url + "/api/v1/pods") as r:
            assert r.status == 200
        async with session.post(proxy.url + "/api/v1/pods", json={}) as r:
            assert r.status == 201  # a create is never answered 409 without the object existing
        async with session.patch(proxy.url + "/api/v1/pods/p", json={"spec": {}}) as r:
            assert r.status == 201  # a merge patch without a resourceVersion cannot conflict
        locked = {"metadata": {"resourceVersion": "7"}}
        for method, body in (("PATCH", locked), ("PUT", {})):
            async with session.request(method, proxy.url + "/api/v1/pods/p", json=body) as r:
                assert r.status == 409
                assert (await r.json())["reason"] == "Conflict"
        assert upstream.writes == 2
        assert proxy.counts[CONFLICT_409] == 2

    run_with(FaultPlan(seed=3, conflict_rate=1.0), body)


def test_delay_slows_but_forwards() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        for _ in range(4):
            async with session.get(proxy.url + "/x") as r:
                assert r.status == 200
        elapsed = time.monotonic() - started
        assert proxy.counts[DELAY] == 4 and upstream.hits == 4
        assert elapsed >= 0.2  # uniform(0.1, 0.3) x 4 would be >= 0.4; bound loosely for the fixed seed

    run_with(FaultPlan(seed=4, delay_rate=1.0, delay_max_s=0.3), body)


def test_timeout_holds_the_request_past_the_client_deadline() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        with pytest.raises(TimeoutError):
            async with session.get(proxy.url + "/x", timeout=aiohttp.ClientTimeout(total=0.3)):
                pass
        assert proxy.counts[TIMEOUT] == 1 and upstream.hits == 0

    run_with(FaultPlan(seed=5, timeout_rate=1.0, timeout_hold_s=5.0), body)


def test_lost_response_applies_the_write_then_reports_an_error() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        async with session.post(proxy.url + "/api/v1/pods", json={"a": 1}) as r:
            assert r.status == 500
        async with session.get(proxy.url + "/api/v1/pods") as r:
            assert r.status == 200  # reads are never "lost"
        assert upstream.writes == 1
        assert proxy.counts[LOST_RESPONSE] == 1

    run_with(FaultPlan(seed=6, lost_response_rate=1.0), body)


async def _read_watch(session: aiohttp.ClientSession, url: str) -> tuple[list[dict], str]:
    """Read a watch stream to its end; return the events and how it ended (eof or error)."""
    events: list[dict] = []
    try:
        async with session.get(url + "/api/v1/pods?watch=true",
                               timeout=aiohttp.ClientTimeout(total=10)) as r:
            async for line in r.content:
                events.append(json.loads(line))
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return events, "error"
    return events, "eof"


def test_watch_stream_ends_cleanly_early() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        events, how = await _read_watch(session, proxy.url)
        assert how == "eof"
        assert time.monotonic() - started < 3
        assert [e["object"]["n"] for e in events] == list(range(len(events)))  # whole lines, in order
        assert proxy.counts[WATCH_END] == 1 and proxy.counts[WATCH_ABORT] == 0

    run_with(FaultPlan(seed=7, watch_drop_rate=1.0, watch_abort_share=0.0, watch_drop_after_max_s=0.5), body)


def test_watch_stream_breaks_mid_way() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        _events, how = await _read_watch(session, proxy.url)
        assert how == "error"
        assert proxy.counts[WATCH_ABORT] == 1 and proxy.counts[WATCH_END] == 0

    run_with(FaultPlan(seed=8, watch_drop_rate=1.0, watch_abort_share=1.0, watch_drop_after_max_s=0.5), body)


def test_same_seed_same_faults_other_seed_other_faults() -> None:
    def sequence(seed: int) -> list[int]:
        statuses: list[int] = []

        async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
            for _ in range(40):
                async with session.patch(proxy.url + "/api/v1/pods/p",
                                         json={"metadata": {"resourceVersion": "1"}}) as r:
                    statuses.append(r.status)

        run_with(FaultPlan(seed=seed, error_rate=0.2, conflict_rate=0.2), body)
        return statuses

    first, again, other = sequence(11), sequence(11), sequence(12)
    assert first == again
    assert first != other
    assert {500, 409, 201} <= set(first)


def test_excluded_paths_and_quiet_plans_are_never_faulted() -> None:
    async def body(proxy: FaultProxy, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        async with session.get(proxy.url + "/healthz") as r:
            assert r.status == 200
        async with session.get(proxy.url + "/api/v1/pods") as r:
            assert r.status == 500
        proxy.set_plan(proxy.plan.quiet())
        async with session.get(proxy.url + "/api/v1/pods") as r:
            assert r.status == 200
        assert proxy.counts[ERROR_500] == 1

    run_with(FaultPlan(seed=9, error_rate=1.0, exclude_paths=("/healthz",)), body)


def test_unreachable_upstream_is_a_502() -> None:
    async def scenario() -> None:
        proxy = FaultProxy("http://127.0.0.1:9", FaultPlan(seed=10))
        await proxy.start()
        try:
            async with aiohttp.ClientSession() as session, session.get(proxy.url + "/x") as r:
                assert r.status == 502
                assert "upstream unreachable" in (await r.json())["message"]
        finally:
            await proxy.stop()

    asyncio.run(scenario())


def test_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("http://127.0.0.1:1", host="0.0.0.0")


def test_proxy_thread_serves_synchronous_clients() -> None:
    loop = asyncio.new_event_loop()
    upstream = Upstream()
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        url = asyncio.run_coroutine_threadsafe(upstream.start(), loop).result(5)
        with ProxyThread(url, FaultPlan(seed=13, error_rate=0.5)) as proxy:
            codes = []
            for _ in range(20):
                try:
                    with urllib.request.urlopen(proxy.url + "/api/v1/pods", timeout=5) as r:
                        codes.append(r.status)
                except urllib.error.HTTPError as error:
                    codes.append(error.code)
            counts = proxy.counts()
        assert set(codes) == {200, 500}
        assert counts[ERROR_500] == codes.count(500)
    finally:
        asyncio.run_coroutine_threadsafe(upstream.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_stop_finishes_what_still_runs_in_the_proxy_loop(monkeypatch) -> None:
    """A handler still suspended when the proxy stops (CI saw a watch handler that aiohttp's shutdown
    left waiting for upstream) finishes while the loop is open. Otherwise the closed loop drops it,
    its coroutine is collected later, its cleanup calls into the closed loop, and Python reports
    "Exception ignored in: <coroutine ...>" in whichever later test runs the collector."""
    import gc
    import sys

    ignored: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    cleaned: list[bool] = []

    async def suspended_handler() -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.Event().wait()
        finally:  # as the watch handler's `upstream.close()` does
            loop.call_soon(lambda: None)
            cleaned.append(True)

    proxy = ProxyThread("http://127.0.0.1:1")
    proxy.start()
    asyncio.run_coroutine_threadsafe(suspended_handler(), proxy._loop)
    proxy.stop()
    del proxy
    gc.collect()
    assert cleaned == [True]
    assert ignored == []
