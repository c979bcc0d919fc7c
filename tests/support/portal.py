"""What the portal's tests share: a clinic's seeded patients with the figures the dashboard
must show for them, CSRF tokens read from a page, and signing in with a one-time link."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask.testing import FlaskClient

from service.accounts import people
from service.accounts.signin import issue_login_link
from service.conversation.invitations import start_conversation
from service.shell.components import Components
from tests.support.conversations import complete_form
from tests.support.fakes.graph import FakeGraphApi
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import Patient

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@dataclass(frozen=True)
class Seeded:
    """What the dashboard must show for the seeded clinic."""

    invited: int = 1
    in_progress: int = 3
    completed: int = 2
    opted_out: int = 1
    completion_rate: str = "33 %"  # 2 completed of 6 who started (3 + 1 + 2)
    at_step: tuple[tuple[str, int], ...] = (
        ("language", 1),
        ("consent", 0),
        ("name", 1),
        ("date_of_birth", 1),
        ("gender", 0),
        ("review", 0),
    )


def seed_clinic(client: FlaskClient, graph: FakeGraphApi, components: Components) -> Seeded:
    """Patients at every stage, each through the real webhook (or invitation) path."""

    def patient(phone: str) -> Patient:
        return Patient(client, graph, APP_SECRET, wa_id=phone)

    complete_form(patient("34611000001"))
    complete_form(patient("34611000002"))
    patient("34611000003").starts_form()  # asked for the name
    stuck_at_birth_date = patient("34611000004")
    stuck_at_birth_date.starts_form()
    stuck_at_birth_date.says("Ana Garcia Ruiz")
    patient("34611000005").says("hello")  # asked for the language
    declined = patient("34611000006")
    declined.says("hello")
    declined.presses("language:en")
    declined.presses("consent:no")
    start_conversation(components, "+34611000007", "seed")
    return Seeded()


def csrf_of(page_html: str) -> str:
    """The CSRF token a portal page put in its forms."""
    match = _CSRF.search(page_html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def create_person(components: Components, email: str, name: str, role: str = "staff") -> str:
    """Create a person's account as an operator would; return its id."""
    created = people.create_person(
        components.repos.providers, components.repos.audit, email, name, role, "operator:test"
    )
    return created.provider.provider_id


def link_secret(components: Components, provider_id: str) -> str:
    return issue_login_link(components, provider_id, "operator:test").secret


def sign_in(client: FlaskClient, components: Components, provider_id: str):
    """Sign a test client in with a fresh one-time link; return the sign-in response."""
    page = client.get("/portal/sign-in")
    return client.post(
        "/portal/sign-in/link",
        data={"csrf_token": csrf_of(page.get_data(as_text=True)),
              "secret": link_secret(components, provider_id)},
    )  # fmt: skip
