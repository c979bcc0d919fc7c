"""Development tools: the WhatsApp simulator page and the fake Graph API it reads.

Registered only when APP_ENV is development or test (see service/shell/app.py); production has none
of these routes. They answer only on a loopback host name, so a web page that rebinds its own
DNS name to 127.0.0.1 cannot drive them (or read the provider's exports) from a browser.
"""

from __future__ import annotations

from flask import Blueprint, Flask, abort, current_app, jsonify, render_template, request
from flask.blueprints import BlueprintSetupState

from blueprints.context import current_components
from devtools import simulator as simulator_service
from devtools.simulator import Simulator
from service.errors import InvalidInputError

EXTENSION_KEY = "devtools"
DEFAULT_PATIENT = "+34 612 345 678"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_LOOPBACK_PEERS = ("127.0.0.1", "::1")
_FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
# The page loads nothing from elsewhere and runs no inline script: what a patient types can
# never run as code, even if a bug rendered it as HTML.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

bp = Blueprint(
    "devtools",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dev/static",
)


@bp.record_once
def _create_simulator(state: BlueprintSetupState) -> None:
    state.app.extensions[EXTENSION_KEY] = Simulator()


def simulator_of(app: Flask) -> Simulator:
    """Return the simulator state of an app that registered this blueprint."""
    return app.extensions[EXTENSION_KEY]


def _simulator() -> Simulator:
    return simulator_of(current_app)


@bp.before_request
def _loopback_only() -> None:
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    # The Host header stops DNS rebinding; the socket peer stops a remote client that sets it.
    # A request that came through a proxy (it says so in a forwarding header) is not local,
    # whichever address the proxy connected from.
    forwarded = any(request.headers.get(name) for name in _FORWARDING_HEADERS)
    if host.lower() not in _LOCAL_HOSTS or _socket_peer() not in _LOOPBACK_PEERS or forwarded:
        abort(403, "the dev tools answer only on localhost, 127.0.0.1 or [::1]")


def _socket_peer() -> str | None:
    """The address of the connection itself, before any ProxyFix read X-Forwarded-For.

    `request.remote_addr` is whatever X-Forwarded-For said once a proxy is trusted, and a
    remote caller can send `X-Forwarded-For: 127.0.0.1` itself.
    """
    original = request.environ.get("werkzeug.proxy_fix.orig")
    if original is not None:
        return original.get("REMOTE_ADDR")
    return request.environ.get("REMOTE_ADDR")


def _own_base_url() -> str:
    """The address this server listens on, for calls to its own webhook and endpoints.

    Not the Host header: a provider token must never follow a name a browser chose.
    """
    host = request.environ.get("SERVER_NAME") or "127.0.0.1"
    port = request.environ.get("SERVER_PORT") or "80"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _json_body() -> dict:
    # JSON only: a cross-site form cannot send it without a CORS preflight, which fails.
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object")
    return body


def _wa_id_arg() -> str:
    return simulator_service.patient_wa_id(request.args.get("wa_id"))


def _patient_arg() -> simulator_service.SimulatedPatient:
    return simulator_service.simulated_patient(
        request.args.get("wa_id"), request.args.get("hide_number")
    )


def _patient_of(body: dict) -> simulator_service.SimulatedPatient:
    return simulator_service.simulated_patient(body.get("wa_id"), body.get("hide_number"))


@bp.post("/dev/graph/<version>/<phone_number_id>/messages")
def graph_messages(version: str, phone_number_id: str):
    """The fake Graph API: answers as Meta does and keeps accepted messages for the page."""
    answer = _simulator().inbox.answer(
        current_components().config,
        version,
        phone_number_id,
        request.headers.get("Authorization"),
        # Like Graph, read the body as JSON whatever its Content-Type says.
        request.get_json(force=True, silent=True),
    )
    return jsonify(answer.body), answer.status, answer.headers


@bp.get("/dev/chat")
def chat_page():
    response = current_app.make_response(
        render_template(
            "devtools/chat.html",
            phone=request.args.get("phone") or DEFAULT_PATIENT,
            hide_number=request.args.get("hide_number") == "1",
        )
    )
    response.headers["Content-Security-Policy"] = _PAGE_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/dev/chat/patient")
def patient():
    wa_id = simulator_service.patient_wa_id(request.args.get("phone"))
    return jsonify(simulator_service.SimulatedPatient(wa_id).describe())


@bp.get("/dev/chat/patients")
def patients():
    return jsonify(
        {
            "patients": [
                {"wa_id": wa_id, "display": simulator_service.patient_display(wa_id)}
                for wa_id in _simulator().inbox.patients()
            ]
        }
    )


@bp.get("/dev/chat/messages")
def messages():
    wa_id = _wa_id_arg()
    after = request.args.get("after", "0")
    if not after.isdigit():
        raise InvalidInputError("after must be a whole number")
    inbox = _simulator().inbox
    return jsonify(
        {"messages": inbox.messages(wa_id, int(after)), "statuses": inbox.statuses(wa_id)}
    )


@bp.post("/dev/chat/send")
def send():
    body = _json_body()
    patient = _patient_of(body)
    message = simulator_service.patient_message(body)
    entry = simulator_service.send_patient_message(
        current_components(), _simulator(), _own_base_url(), patient, message
    )
    return jsonify({"message": entry})


@bp.post("/dev/chat/status")
def status():
    body = _json_body()
    patient = _patient_of(body)
    wamids = body.get("wamids")
    if not isinstance(wamids, list):
        raise InvalidInputError("wamids must be a list")
    result = simulator_service.post_statuses(
        current_components(), _simulator(), _own_base_url(), patient, wamids, body.get("status")
    )
    return jsonify(result)


@bp.get("/dev/chat/conversation")
def conversation():
    return jsonify(simulator_service.support_view(current_components(), _patient_arg()))


@bp.get("/dev/clock")
def clock():
    return jsonify(simulator_service.clock_view(_simulator()))


@bp.post("/dev/clock")
def advance_clock():
    """Move the simulated clock forward (+4 h, +1 day) and run the reminder task then."""
    hours = _json_body().get("hours")
    return jsonify(simulator_service.advance_clock(current_components(), _simulator(), hours))


@bp.get("/dev/provider/password")
def provider_password():
    status_code, body = simulator_service.call_provider_endpoint(
        current_components(), _simulator(), _own_base_url(), "/exports/password"
    )
    return jsonify(body), status_code, {"Cache-Control": "no-store"}


@bp.post("/dev/provider/export")
def provider_export():
    file_format = _json_body().get("format")
    if file_format not in ("csv", "xlsx"):
        raise InvalidInputError("format must be csv or xlsx")
    status_code, body = simulator_service.call_provider_endpoint(
        current_components(), _simulator(), _own_base_url(), "/extractData", {"format": file_format}
    )
    return jsonify(body), status_code, {"Cache-Control": "no-store"}
