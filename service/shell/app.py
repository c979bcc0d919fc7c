"""The application factory: one place that wires config, clients, blueprints and handlers."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Literal, overload

from flask import Flask, Request, Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from blueprints.context import EXTENSION_KEY
from repositories.clients import DEPENDENCY_ERRORS, dependency_unavailable, is_refusal
from service.errors import RateLimitedError, ServiceError, UnavailableError
from service.shell.components import Components, build_components
from service.shell.config import Config
from service.shell.logging import configure_logging

logger = logging.getLogger(__name__)

# Meta sends webhook payloads of up to 3 MB; a smaller limit would turn a real delivery into a
# 413 that Meta retries for a week and then drops. Anything larger is refused with 413 before
# the signature is even computed, so an unsigned flood costs no more than reading 3 MiB.
MAX_BODY_BYTES = 3 * 1024 * 1024


class _BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that a body nested too deeply to parse is invalid, not a crash.

    The standard library raises RecursionError (not ValueError) past about 1,000 levels, and
    `request.get_json(silent=True)` only absorbs ValueError: without this, 100,000 `[` sent
    to any JSON endpoint would end in a 500.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


class _BoundedRequest(Request):
    """A request whose body over MAX_CONTENT_LENGTH is always 413, streamed or not.

    werkzeug refuses a declared Content-Length over the limit, but a chunked body (no
    Content-Length; gunicorn passes those through) is silently cut at the limit: the webhook
    would then see a truncated body and answer 401, and a JSON endpoint could act on a prefix.
    """

    @overload
    def get_data(
        self, cache: bool = True, as_text: Literal[False] = False, parse_form_data: bool = False
    ) -> bytes: ...

    @overload
    def get_data(
        self, cache: bool = True, as_text: Literal[True] = ..., parse_form_data: bool = False
    ) -> str: ...

    def get_data(
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> bytes | str:
        data = super().get_data(cache=cache, as_text=False, parse_form_data=parse_form_data)
        limit = self.max_content_length
        if self.content_length is None and limit is not None and len(data) >= limit:
            if self.environ["wsgi.input"].read(1):  # more than the limit was sent
                raise RequestEntityTooLarge()
        return data.decode(errors="replace") if as_text else data


def create_app(config: Config | None = None, components: Components | None = None) -> Flask:
    """Build the Flask app from config (read from the environment when not given)."""
    if components is not None:
        config = components.config
    if config is None:
        config = Config.from_env(os.environ)
    configure_logging(config.project_id)
    app = Flask(__name__)
    app.request_class = _BoundedRequest
    app.json = _BoundedJSONProvider(app)
    # An API has no use for redirects, and werkzeug answers them with an HTML page before any
    # error handler runs: `/exports//password` gets a JSON 404 instead (set before any
    # rule is added, since each rule copies these when it is bound).
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    _trust_configured_proxies(app, config.trusted_proxy_hops)
    app.config["SECRET_KEY"] = config.secret_key
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions[EXTENSION_KEY] = components = components or build_components(config)
    if config.is_production:
        _load_keys_at_start(components)
    _register_blueprints(app, config)
    _register_error_handlers(app)
    _register_response_headers(app)
    _register_access_log(app)
    from service.shell.cli import cli

    app.cli.add_command(cli, name="intake")
    return app


def _trust_configured_proxies(app: Flask, hops: int) -> None:
    """Take the client address from X-Forwarded-For only when proxies are configured.

    Without a proxy, anyone can send X-Forwarded-For: trusting it would let a caller choose
    its own address (for the rate limiter, the audit log and the dev tools' loopback check).
    With `hops` proxies (Cloud Run's front end is one), the entry the outermost trusted proxy
    appended is the client; entries the caller sent itself are ignored. The scheme comes from
    the nearest proxy's X-Forwarded-Proto, which it sets rather than appends to.
    """
    if hops:
        # Flask's documented way to add WSGI middleware, though Flask types wsgi_app a method.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=1)  # type: ignore[method-assign]


def _load_keys_at_start(components: Components) -> None:
    """Unwrap the keyset before serving, so the first patient does not wait for KMS."""
    problem = components.keys.ready()
    if problem:
        # Not fatal: /readyz answers 503 and keeps retrying, so Cloud Run holds traffic back.
        logger.error(f"key material unavailable at start: {problem}")


def _register_blueprints(app: Flask, config: Config) -> None:
    from blueprints.docs import bp as docs_bp
    from blueprints.exports import bp as exports_bp
    from blueprints.health import bp as health_bp
    from blueprints.messaging import bp as messaging_bp
    from blueprints.portal import bp as portal_bp

    app.register_blueprint(docs_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(messaging_bp)
    app.register_blueprint(exports_bp)
    if config.portal_enabled:
        app.register_blueprint(portal_bp)
    if config.app_env in ("development", "test"):
        # The simulator page and its fake Graph API: never part of a production app.
        from devtools.blueprint import bp as devtools_bp

        app.register_blueprint(devtools_bp)


def _route() -> str:
    """The matched route pattern: raw paths can carry whatever the caller typed."""
    return request.url_rule.rule if request.url_rule else "(unmatched)"


def _error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


class _OncePerInterval:
    """Admit one log line per key per interval; count the ones held back meanwhile."""

    def __init__(self, interval_seconds: float = 60.0) -> None:
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """Return how many were held back since the last admitted line, or None to hold."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)


def _register_error_handlers(app: Flask) -> None:
    outage_lines = _OncePerInterval()

    @app.errorhandler(ServiceError)
    def handle_service_error(
        error: ServiceError, cause: Exception | None = None
    ) -> tuple[Response, int]:
        if isinstance(error, UnavailableError):
            # An outage answers every request with 503 (Meta retries); one line a minute per
            # kind and route says so, with how many more were refused, not one per request.
            kind = type(cause or error).__name__
            repeats = outage_lines.admit(f"{kind} {_route()}")
            if repeats is not None:
                logger.error(
                    f"{type(error).__name__}: {error}",
                    extra={"route": _route(), "refused_since_last_line": repeats},
                    # A refusal (a document over the size limit, access denied) is likelier
                    # our bug than an outage: its line carries the traceback.
                    exc_info=cause if cause is not None and is_refusal(cause) else None,
                )
        elif error.status >= 500:
            # Integrity failures must be visible every time; their messages hold no PHI.
            logger.error(f"{type(error).__name__}: {error}", extra={"route": _route()})
        response = jsonify(_error_body(error.code, str(error)))
        if isinstance(error, (RateLimitedError, UnavailableError)):
            response.headers["Retry-After"] = str(error.retry_after)
        return response, error.status

    def handle_dependency_error(error: Exception) -> tuple[Response, int]:
        """Any Firestore or Storage failure that reached Flask: 503, never a 500 loop."""
        return handle_service_error(dependency_unavailable(error), cause=error)

    for error_class in DEPENDENCY_ERRORS:
        app.register_error_handler(error_class, handle_dependency_error)

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException) -> tuple[Response, int]:
        code = (error.name or "error").lower().replace(" ", "_")
        response = jsonify(_error_body(code, error.description or error.name))
        return response, error.code or 500

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> tuple[Response, int]:
        logger.exception("unhandled error", extra={"route": _route()})
        return jsonify({"error": {"code": "internal", "message": "internal error"}}), 500


def _register_response_headers(app: Flask) -> None:
    @app.after_request
    def forbid_caching(response: Response) -> Response:
        """Keep every answer out of browser and proxy caches unless its view chose otherwise.

        Passwords, records, tokens, download links and error details must never be kept on
        a clinic's shared computer or in a proxy; defaulting here (errors included) means a
        new endpoint cannot forget it. A view that sets its own Cache-Control keeps it, and
        tests/integration/test_hostile_input.py then has to be told.
        """
        if "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        if response.cache_control.no_store:
            response.headers.setdefault("Pragma", "no-cache")  # HTTP/1.0 caches
        # Browsers must not guess HTML from a body that echoes input (the webhook handshake).
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


def _register_access_log(app: Flask) -> None:
    access = logging.getLogger("service.access")

    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def log_request(response: Response) -> Response:
        started = g.get("request_started", time.perf_counter())
        latency = time.perf_counter() - started
        # The route pattern, never the raw URL: a path or query string can hold anything a
        # caller typed (a name, a signed-link token), and unmatched paths are logged as such.
        # No User-Agent either: it is free text as well (a clinic's script may put a patient
        # in it), and Cloud Run's own request log keeps it. Audit events keep it for provider
        # requests, in Firestore.
        route = _route()
        access.info(
            f"{request.method} {route} {response.status_code}",
            extra={
                "httpRequest": {
                    "requestMethod": request.method,
                    "requestUrl": route,
                    "status": response.status_code,
                    "latency": f"{latency:.6f}s",
                    "remoteIp": request.remote_addr,
                },
                "latency_ms": round(latency * 1000, 3),
            },
        )
        return response
