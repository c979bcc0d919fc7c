"""The dashboard's figures, from Firestore aggregation queries and one bounded sample.

No figure reads every conversation: each count is one `count()` aggregation (Firestore counts
from its index, billed per 1,000 entries counted), and the median time to complete is taken
over at most MEDIAN_SAMPLE of the latest completions. No patient data is read at all.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from repositories.archive.model import INDEX_COLLECTION, day_start
from repositories.identities import CONVERSATIONS
from repositories.insights import Count
from service.conversation.flow import catalog
from service.conversation.flow.questionnaire import load_questionnaire
from service.domain.turns import ConversationStatus
from service.portal.ports import PortalDeps

MEDIAN_SAMPLE = 500
WINDOW_DAYS = 30
# The two review steps are one place to stop: the summary and choosing what to edit.
_REVIEW_STEPS = ("summary", "edit")
_UNLABELLED = {"consent": "Consent", "review": "Review and confirm"}


@dataclass(frozen=True)
class FunnelStep:
    step: str
    label: str
    waiting: int  # patients whose form is open at this step now
    share: float  # of the largest bar, 0..1, for drawing


@dataclass(frozen=True)
class Dashboard:
    invited: int  # invited, not answered yet
    in_progress: int  # answering or reviewing the form
    opted_out: int
    completed_now: int  # conversations whose last form is completed
    completed_today: int  # records archived since 00:00 UTC, then in 7 and 30 days
    completed_7_days: int
    completed_30_days: int
    completion_rate: float | None  # completed / everyone who started a form
    median_seconds: float | None
    median_sample: int
    funnel: list[FunnelStep]


def _steps() -> list[tuple[str, str, tuple[str, ...]]]:
    """(key, label, step ids) for each place in the form, in order."""
    places: list[tuple[str, str, tuple[str, ...]]] = []
    review = tuple(q.id for q in load_questionnaire().questions if q.type in _REVIEW_STEPS)
    for question in load_questionnaire().questions:
        if question.type in _REVIEW_STEPS:
            continue
        label = catalog.say("en", question.label) if question.label else ""
        places.append(
            (question.id, label or _UNLABELLED.get(question.id, question.id), (question.id,))
        )
    places.append(("review", _UNLABELLED["review"], review))
    return places


def dashboard(deps: PortalDeps, now: datetime) -> Dashboard:
    """Count where every patient is, and how many completed lately."""
    statuses = [
        ConversationStatus.INVITED,
        ConversationStatus.IN_PROGRESS,
        ConversationStatus.CONFIRMING,
        ConversationStatus.OPTED_OUT,
        ConversationStatus.COMPLETED,
    ]
    since = [day_start(now.date()), now - timedelta(days=7), now - timedelta(days=WINDOW_DAYS)]
    places = _steps()
    step_ids = [step for _, _, steps in places for step in steps]
    counts = deps.repos.insights.counts(
        [Count(CONVERSATIONS, "status", "==", status) for status in statuses]
        + [Count(INDEX_COLLECTION, "submitted_at", ">=", moment) for moment in since]
        + [Count(CONVERSATIONS, "step", "==", step) for step in step_ids]
    )
    invited, in_progress, confirming, opted_out, completed = counts[:5]
    today, week, month = counts[5:8]
    at_step = dict(zip(step_ids, counts[8:], strict=True))
    waiting = [sum(at_step[step] for step in steps) for _, _, steps in places]
    largest = max(waiting, default=0) or 1
    funnel = [
        FunnelStep(key, label, count, count / largest)
        for (key, label, _), count in zip(places, waiting, strict=True)
    ]
    started = in_progress + confirming + opted_out + completed
    durations = deps.repos.insights.completion_times(
        now - timedelta(days=WINDOW_DAYS), MEDIAN_SAMPLE
    )
    return Dashboard(
        invited=invited,
        in_progress=in_progress + confirming,
        opted_out=opted_out,
        completed_now=completed,
        completed_today=today,
        completed_7_days=week,
        completed_30_days=month,
        completion_rate=completed / started if started else None,
        median_seconds=statistics.median(durations) if durations else None,
        median_sample=len(durations),
        funnel=funnel,
    )
