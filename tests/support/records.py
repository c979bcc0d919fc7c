"""Sample intake records for tests and benchmarks (invented people, never real ones)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from service.domain.record import IntakeRecord, new_record_id

PATIENT_NAME = "Maria Fernanda Lopez"
PATIENT_ADDRESS = "Calle Falsa 123, 28013 Madrid"


def make_record(
    submitted_at: datetime | None = None, record_id: str | None = None, **overrides: object
) -> IntakeRecord:
    submitted_at = submitted_at or datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    fields: dict[str, object] = {
        "record_id": record_id or new_record_id(),
        "submitted_at": submitted_at,
        "wa_id": "34612345678",
        "name": PATIENT_NAME,
        "date_of_birth": date(1980, 2, 3),
        "gender": "female",
        "address": PATIENT_ADDRESS,
        "medical_conditions": ("Type 2 diabetes", "Hypertension"),
        "current_medications": ("Metformin 500mg",),
        "language": "es",
        "consent_at": submitted_at - timedelta(minutes=5),
        "questionnaire_version": "1",
    }
    fields.update(overrides)
    return IntakeRecord(**fields)


def numbered_record(index: int, start: datetime | None = None) -> IntakeRecord:
    """The index-th of a series of distinct records, one second apart."""
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    return make_record(
        submitted_at=start + timedelta(seconds=index),
        name=f"Patient Number {index}",
        wa_id=f"4477009{index:05d}",
    )
