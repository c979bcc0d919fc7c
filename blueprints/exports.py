"""Provider exports: build an export, download it through its signed link, the day's password;
and the form the FHIR export answers, as a public FHIR Questionnaire."""

from flask import Blueprint, Response, g, jsonify, request, url_for

from blueprints.auth import provider_required, request_origin
from blueprints.context import current_components
from service.accounts.providers import PEOPLE
from service.domain.passwords import export_password, today_utc
from service.exports import build as export_service
from service.exports import links as export_links
from service.exports.fhir.questionnaire import questionnaire_json

bp = Blueprint("exports", __name__)


@bp.get("/exports/password")
@provider_required(PEOPLE)
def password() -> Response:
    daily = export_password(current_components().config.zip_password, today_utc())
    response = jsonify({"password": daily.password, "valid_until": daily.valid_until.isoformat()})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/extractData")
@provider_required(PEOPLE)
def extract_data() -> Response:
    created = export_service.create_export(
        current_components(),
        g.provider.provider_id,
        request.args.get("format"),
        request.args.get("from"),
        request.args.get("to"),
        request_origin(),
    )
    download_url = url_for(
        "exports.download", export_id=created.export_id, token=created.token, _external=True
    )
    response = jsonify(
        {
            "export_id": created.export_id,
            "format": created.format,
            "records": created.records,
            "download_url": download_url,
            "expires_at": created.expires_at.isoformat(),
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/exports/<export_id>/download")
def download(export_id: str) -> Response:
    opened = export_links.open_limited_download(
        current_components(), export_id, request.args.get("token"), request_origin()
    )
    response = Response(opened.chunks, mimetype="application/zip", direct_passthrough=True)
    response.headers["Content-Disposition"] = f'attachment; filename="{opened.file_name}"'
    response.headers["Content-Length"] = str(opened.size)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    # An export built just before midnight UTC opens with that day's password, not today's.
    response.headers["X-Export-Password-Date"] = opened.password_date.isoformat()
    return response


@bp.get("/fhir/Questionnaire/intake")
def fhir_questionnaire() -> Response:
    # Public: the form's questions and choices, no patient data; the same bytes as the
    # Questionnaire.json of every FHIR export.
    return Response(questionnaire_json(), mimetype="application/fhir+json")
