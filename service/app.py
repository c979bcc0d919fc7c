"""The application factory: one place that wires config, clients, blueprints and handlers."""

from __future__ import annotations

import logging
import os
import time

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from service.components import EXTENSION_KEY, Components, build_components
from service.config import Config
from service.errors import RateLimitedError, ServiceError
from service.logging import configure_logging

logger = logging.getLogger(__name__)


def create_app(config: Config | None = None, components: Components | None = None) -> Flask:
    """Build the Flask app from config (read from the environment when not given)."""
    if components is not None:
        config = components.config
    if config is None:
        config = Config.from_env(os.environ)
    configure_logging(config.project_id)
    app = Flask(__name__)
    # Cloud Run's front end is exactly one proxy hop: trust its X-Forwarded-For and -Proto only.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    app.config["SECRET_KEY"] = config.secret_key
    app.config["MAX_CONTENT_LENGTH"] = 3 * 1024 * 1024  # Meta's webhook payload limit
    app.extensions[EXTENSION_KEY] = components = components or build_components(config)
    if config.is_production:
        _load_keys_at_start(components)
    _register_blueprints(app, config)
    _register_error_handlers(app)
    _register_access_log(app)
    from service.cli import cli

    app.cli.add_command(cli, name="intake")
    return app


def _load_keys_at_start(components: Components) -> None:
    """Unwrap the keyset before serving, so the first patient does not wait for KMS."""
    problem = components.keys.ready()
    if problem:
        # Not fatal: /readyz answers 503 and keeps retrying, so Cloud Run holds traffic back.
        logger.error(f"key material unavailable at start: {problem}")


def _register_blueprints(app: Flask, config: Config) -> None:
    from blueprints.exports import bp as exports_bp
    from blueprints.health import bp as health_bp
    from blueprints.messaging import bp as messaging_bp

    app.register_blueprint(health_bp)
    app.register_blueprint(messaging_bp)
    app.register_blueprint(exports_bp)
    if config.app_env in ("development", "test"):
        # The simulator page and its fake Graph API: never part of a production app.
        from blueprints.devtools import bp as devtools_bp

        app.register_blueprint(devtools_bp)


def _route() -> str:
    """The matched route pattern: raw paths can carry whatever the caller typed."""
    return request.url_rule.rule if request.url_rule else "(unmatched)"


def _error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def handle_service_error(error: ServiceError):
        if error.status >= 500:
            # Outages and integrity failures must be visible; their messages hold no PHI.
            logger.error(f"{type(error).__name__}: {error}", extra={"route": _route()})
        response = jsonify(_error_body(error.code, str(error)))
        if isinstance(error, RateLimitedError):
            response.headers["Retry-After"] = str(error.retry_after)
        return response, error.status

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        response = jsonify(_error_body(code, error.description or error.name))
        return response, error.code or 500

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        logger.exception("unhandled error", extra={"route": _route()})
        return jsonify({"error": {"code": "internal", "message": "internal error"}}), 500


def _register_access_log(app: Flask) -> None:
    access = logging.getLogger("service.access")

    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def log_request(response):
        started = g.get("request_started", time.perf_counter())
        latency = time.perf_counter() - started
        # The route pattern, never the raw URL: a path or query string can hold anything a
        # caller typed (a name, a signed-link token), and unmatched paths are logged as such.
        route = _route()
        access.info(
            f"{request.method} {route} {response.status_code}",
            extra={
                "httpRequest": {
                    "requestMethod": request.method,
                    "requestUrl": route,
                    "status": response.status_code,
                    "latency": f"{latency:.6f}s",
                    "userAgent": request.user_agent.string[:200],
                    "remoteIp": request.remote_addr,
                },
                "latency_ms": round(latency * 1000, 3),
            },
        )
        return response
