"""The portal's exports page: start an export (it runs as a job, off the request), follow
its progress, download it and copy today's password."""

from __future__ import annotations

from flask import Response, jsonify, redirect, request
from werkzeug.wrappers import Response as Redirect

from blueprints.auth import request_origin
from blueprints.context import current_components
from blueprints.portal.forms import ExportForm
from blueprints.portal.web import account, bp, page, see_other
from service.exports.jobs import queue_export_job
from service.portal import exports as export_service


@bp.get("/exports")
def exports() -> tuple[str, int]:
    components = current_components()
    rows = export_service.export_rows(components, components.export_runner, account())
    return page(
        "exports.html",
        "Exports",
        form=ExportForm(),
        rows=rows,
        choices=export_service.format_choices(),
        password=export_service.todays_password(components),
        started=request.args.get("started"),
    )


@bp.post("/exports")
def start_export() -> Redirect:
    form = ExportForm()
    components = current_components()
    job = queue_export_job(
        components,
        components.export_runner,
        account().provider_id,
        form.format.data,
        form.date_from.data or None,
        form.date_to.data or None,
        request_origin(),
    )
    return see_other("portal.exports", started=job.job_id)


@bp.get("/exports/<job_id>/progress")
def export_progress(job_id: str) -> Response:
    """What the page's progress bar shows (polled by portal.js); no patient data."""
    components = current_components()
    row = export_service.job_progress(components, components.export_runner, account(), job_id)
    return jsonify(
        {
            "status": row.status,
            "done": row.done,
            "total": row.total,
            "records": row.records,
            "error": row.error,
        }
    )


@bp.get("/exports/<job_id>/download")
def download_export(job_id: str) -> Redirect:
    """Send the browser to a fresh signed link of the export (the download itself is the
    API's: streamed, audited, and opened with the day's password)."""
    link = export_service.download_link(current_components(), account(), job_id)
    return redirect(link, 303)
