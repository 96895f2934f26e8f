"""One /metrics HTTP server for a prometheus_client registry, used by the trainer and the operator.

Unlike `prometheus_client.start_http_server` it can be stopped, freeing its port (tests and `mnv2 run`
start several in one process), logs no line per scrape, and can tell Prometheus's scrapes apart
(by User-Agent) for `TrainerMetrics.flush`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape (the trainer's stdout is for training lines)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """Serves `registry` on addr:port in a daemon thread until `close()`."""

    def __init__(
        self, registry: CollectorRegistry, addr: str, port: int, *, what: str,
        on_prometheus_scrape: Callable[[], None] | None = None,
    ) -> None:
        app = make_wsgi_app(registry)

        def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if on_prometheus_scrape and environ.get("HTTP_USER_AGENT", "").startswith("Prometheus/"):
                on_prometheus_scrape()
            return app(environ, start_response)

        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]

            class Server(ThreadingWSGIServer):
                address_family = family

            self._httpd = make_server(sockaddr[0], port, metrics_app, Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve {what} on {addr}:{port}: {exc}") from exc
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"{what}-{port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The scrape URL on loopback."""
        return f"http://127.0.0.1:{self._httpd.server_port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
