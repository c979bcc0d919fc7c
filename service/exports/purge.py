"""Delete export zips once their links have long expired, and zips no live export names."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from repositories.exports import ExportStatus
from service.accounts.ratelimit import RequestOrigin
from service.exports.audit import EXPORT_ID, audit_export_event
from service.exports.ports import ExportDeps

logger = logging.getLogger(__name__)


PURGE_AFTER = timedelta(hours=24)


@dataclass(frozen=True)
class PurgeReport:
    exports: int  # documents marked purged, their zips deleted
    orphans: int  # zips without a live document (an export that failed half-way)


def purge_exports(
    components: ExportDeps,
    older_than: timedelta = PURGE_AFTER,
    now: datetime | None = None,
    actor: str = "operator:cli",
) -> PurgeReport:
    """Delete export zips older than `older_than` and mark their documents purged."""
    now = now or datetime.now(UTC)
    cutoff = now - older_than
    exports = components.repos.exports
    purged = 0
    for entry in exports.ready_before(cutoff):
        exports.delete_zip(entry.object_name)
        exports.mark_purged(entry.export_id, now)
        audit_export_event(
            components,
            "export.purge",
            "success",
            actor,
            RequestOrigin(),
            {"export_id": entry.export_id, "created_at": entry.created_at.isoformat()},
        )
        purged += 1
    # Zips with no live document: a failure between upload and create, or a purge that
    # marked the document but was stopped before the delete went through.
    orphans = 0
    for object_name, export_id in exports.zip_objects_before(cutoff):
        live = exports.get(export_id) if EXPORT_ID.fullmatch(export_id) else None
        if (live is None or live.status == ExportStatus.PURGED) and exports.delete_zip(object_name):
            orphans += 1
    logger.info("exports purged", extra={"exports": purged, "orphans": orphans})
    return PurgeReport(exports=purged, orphans=orphans)
