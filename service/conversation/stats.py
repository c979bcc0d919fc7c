"""How reminders work out, per step, without patient data: counted by Firestore aggregation
queries over plain step names (no conversation is read), for the CLI and the portal."""

from __future__ import annotations

from dataclasses import dataclass

from service.conversation.flow.questionnaire import load_questionnaire
from service.conversation.ports import ConversationDeps
from service.conversation.schedule import INVITATION_STEP


@dataclass(frozen=True)
class StepStats:
    """One step of the form (or the invitation, as step "invitation")."""

    step: str
    stopped: int  # patients silent at this step now (past the first reminder's delay)
    reminded: int  # patients reminded at this step in their current (or last) form
    completed_after_reminder: int  # of those, the ones whose last form was then completed


def reminder_stats(components: ConversationDeps) -> list[StepStats]:
    """Return, for the invitation and each step of the form, how many patients stopped
    there, how many were reminded there and how many completed after that reminder."""
    conversations = components.repos.conversations
    steps = [INVITATION_STEP, *(question.id for question in load_questionnaire("1").questions)]
    return [
        StepStats(
            step,
            stopped=conversations.count_where("stalled_step", "==", step),
            reminded=conversations.count_where("reminded_steps", "array_contains", step),
            completed_after_reminder=conversations.count_where(
                "completed_reminded_steps", "array_contains", step
            ),
        )
        for step in steps
    ]
