"""Meta's webhook (handshake and deliveries), invitations, and the outbox and reminder tasks."""

from __future__ import annotations

import hmac
from dataclasses import asdict
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, g, jsonify, request

from blueprints.auth import provider_required
from blueprints.context import current_components
from service.accounts.providers import PEOPLE, TASK_RUNNERS
from service.conversation.inbound import handle_webhook
from service.conversation.invitations import start_conversation
from service.conversation.outbox import flush_all_outboxes
from service.conversation.reminders import send_reminders
from service.errors import InvalidInputError, UnauthorizedError
from service.whatsapp.webhook import parse_payload, signature_valid

bp = Blueprint("messaging", __name__)

# `/getIncomingMessage` is the path the seed's code actually served; `/webhook` is the
# conventional one. All three stay, so an app configured for either keeps working.
WEBHOOK_PATHS = ("/getIncomingMessages", "/getIncomingMessage", "/webhook")


def verify_handshake() -> tuple[str, int, dict[str, str]]:
    """Answer Meta's subscription check with the challenge when the token matches."""
    config = current_components().config
    mode = request.args.get("hub.mode", "")
    token = request.args.get("hub.verify_token", "")
    challenge = request.args.get("hub.challenge", "")
    if mode != "subscribe" or not hmac.compare_digest(
        token.encode(), config.whatsapp_verify_token.encode()
    ):
        abort(403)
    # The challenge is echoed by design: plain text that no browser may sniff into HTML.
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
    return challenge, 200, headers


def receive() -> Response:
    """Verify the signature over the raw body before anything else, then process it."""
    components = current_components()
    raw = request.get_data(cache=False)
    signature = request.headers.get("X-Hub-Signature-256")
    if not signature_valid(components.config.whatsapp_app_secret, raw, signature):
        raise UnauthorizedError("invalid or missing X-Hub-Signature-256")
    handle_webhook(components, parse_payload(raw, components.config.whatsapp_phone_number_id))
    return jsonify({"status": "ok"})


for path in WEBHOOK_PATHS:
    bp.add_url_rule(path, f"handshake{path}", verify_handshake, methods=["GET"])
    bp.add_url_rule(path, f"receive{path}", receive, methods=["POST"])


@bp.post("/startConversation")
@provider_required(PEOPLE)
def start() -> tuple[Response, int]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInputError('the body must be JSON like {"to": "+447700900123"}')
    to = body.get("to", body.get("target_audience"))
    phone = start_conversation(current_components(), to, g.provider.provider_id)
    return jsonify({"status": "invited", "to": f"+{phone}"}), 202


@bp.post("/tasks/flush-outbox")
@provider_required(TASK_RUNNERS)
def flush_outbox_task() -> Response:
    report = flush_all_outboxes(current_components())
    return jsonify({"sent": report.sent, "failed": report.failed})


@bp.post("/tasks/send-reminders")
@provider_required(TASK_RUNNERS)
def send_reminders_task() -> Response:
    report = send_reminders(current_components(), datetime.now(UTC))
    return jsonify(asdict(report))
