"""Whole conversations a patient has with the bot, step by step."""

from __future__ import annotations

from tests.support.whatsapp import Patient, button_ids


def complete_form(patient: Patient, language: str = "en") -> list[dict]:
    """Answer every question and confirm the summary; return the replies to the confirmation."""
    patient.starts_form(language)
    patient.says("Maria Fernanda Lopez")
    patient.says("03/02/1980")
    patient.presses("gender:female")
    patient.says("Calle Falsa 123, 28013 Madrid")
    patient.says("Type 2 diabetes, hypertension")
    summary = patient.says("Metformin 500mg")
    assert button_ids(summary[-1]) == ["summary:confirm", "summary:edit", "summary:restart"]
    return patient.presses("summary:confirm")
