"""Provider exports: the day's zip password (export building lands with the exports issue)."""

from flask import Blueprint, jsonify

from blueprints.auth import provider_required
from service.components import current_components
from service.passwords import export_password, today_utc

bp = Blueprint("exports", __name__)


@bp.get("/exports/password")
@provider_required
def password():
    daily = export_password(current_components().config.zip_password, today_utc())
    response = jsonify({"password": daily.password, "valid_until": daily.valid_until.isoformat()})
    response.headers["Cache-Control"] = "no-store"
    return response
