"""The staff portal over HTTP: sign-in (links, tokens, IAP), sessions and their ends, CSRF,
roles, audit events, the dashboard's figures and the CLI. The browser test drives the pages."""

from __future__ import annotations

import dataclasses
import re
import time
from urllib.parse import quote

import pytest

from service.accounts.iap import HEADER
from service.archive.records import archive_record
from service.shell.app import create_app
from tests.support.exports import todays_password, unzip
from tests.support.fakes.iap import AUDIENCE, IapKeyServer, IapSigner
from tests.support.portal import create_person, csrf_of, link_secret, seed_clinic, sign_in
from tests.support.records import make_record


def events(components, action):
    return [event for event in components.repos.audit.list() if event.action == action]


def test_a_page_without_a_session_sends_the_browser_to_sign_in(client):
    response = client.get("/portal/")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/portal/sign-in")


def test_a_one_time_link_signs_in_once_and_is_stored_only_as_a_hash(client, components):
    staff = create_person(components, "Sam@Clinic.example", "Sam Staff")
    secret = link_secret(components, staff)
    page = client.get("/portal/sign-in").get_data(as_text=True)
    first = client.post(
        "/portal/sign-in/link", data={"csrf_token": csrf_of(page), "secret": secret}
    )
    assert first.status_code == 303 and first.headers["Location"].endswith("/portal/")
    assert "Sam Staff" in client.get("/portal/").get_data(as_text=True)

    other = create_app(components=components).test_client()
    page = other.get("/portal/sign-in").get_data(as_text=True)
    again = other.post("/portal/sign-in/link", data={"csrf_token": csrf_of(page), "secret": secret})
    assert again.status_code == 401
    stored = [
        doc.to_dict() for doc in components.repos.firestore.collection("login_links").stream()
    ]
    assert len(stored) == 1 and secret not in str(stored)
    outcomes = [(e.outcome, e.details.get("reason")) for e in events(components, "portal.sign_in")]
    assert outcomes == [("success", None), ("failure", "unknown_or_used")]


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(client, components):
    admin = create_person(components, "ada@clinic.example", "Ada Admin", "admin")
    sign_in(client, components, admin)
    response = client.post(
        "/portal/admin/accounts",
        data={"email": "eve@clinic.example", "name": "Eve", "role": "admin"},
    )
    assert response.status_code == 400
    assert "form expired or did not come from this portal" in response.get_data(as_text=True)
    assert components.repos.providers.by_email("eve@clinic.example") is None


def test_staff_cannot_open_administration(client, components):
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    sign_in(client, components, staff)
    assert client.get("/portal/admin/accounts").status_code == 403
    assert client.get("/portal/admin/audit").status_code == 403


def test_an_idle_session_is_signed_out_and_the_end_is_audited(components):
    quick = dataclasses.replace(components, config=components.config.replace(portal_idle_seconds=1))
    client = create_app(components=quick).test_client()
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    sign_in(client, quick, staff)
    assert client.get("/portal/").status_code == 200
    time.sleep(1.2)
    response = client.get("/portal/")
    assert response.status_code == 303 and response.headers["Location"].endswith("ended=idle")
    assert client.get("/portal/").status_code == 303  # the session is over, not just this page
    ended = events(components, "portal.sign_out")
    assert [(e.actor, e.details["reason"]) for e in ended] == [(staff, "idle")]


def test_a_session_ends_after_its_absolute_limit_however_active(components):
    short = dataclasses.replace(
        components, config=components.config.replace(portal_session_seconds=2)
    )
    client = create_app(components=short).test_client()
    sign_in(client, short, create_person(components, "sam@clinic.example", "Sam Staff"))
    for _ in range(3):
        assert client.get("/portal/").status_code == 200
        time.sleep(0.5)
    time.sleep(0.6)
    assert client.get("/portal/").headers["Location"].endswith("ended=expired")


def test_a_revoked_account_is_signed_out_on_its_next_request(client, components):
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    sign_in(client, components, staff)
    components.repos.providers.revoke(staff, components.repos.audit.list()[0].at)
    response = client.get("/portal/intakes")
    assert response.headers["Location"].endswith("ended=revoked")


def test_sign_out_ends_the_session_so_its_cookie_no_longer_works(client, components):
    sign_in(client, components, create_person(components, "sam@clinic.example", "Sam Staff"))
    cookie = client.get_cookie("portal")
    page = client.get("/portal/").get_data(as_text=True)
    client.post("/portal/sign-out", data={"csrf_token": csrf_of(page)})
    replay = create_app(components=components).test_client()
    replay.set_cookie("portal", cookie.value)
    assert replay.get("/portal/").status_code == 303


def test_the_session_cookie_is_httponly_strict_and_secure_in_production(client, components):
    response = sign_in(client, components, create_person(components, "s@clinic.example", "Sam"))
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    production = dataclasses.replace(
        components, config=components.config.replace(app_env="production")
    )
    app = create_app(components=production)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-portal"


def test_failed_sign_ins_are_rate_limited_per_address(client, components):
    page = client.get("/portal/sign-in").get_data(as_text=True)
    statuses = [
        client.post(
            "/portal/sign-in/token",
            data={"csrf_token": csrf_of(page), "token": f"ipt_0123456789abcdef_guess{n}"},
        ).status_code
        for n in range(12)
    ]
    assert statuses[:10] == [401] * 10 and statuses[-1] == 429


def test_the_account_token_signs_its_person_in_but_not_the_scheduler(client, components):
    from service.accounts.providers import Role, create_provider

    person = create_provider(components.repos.providers, "Sam", Role.STAFF, "s@clinic.example")
    scheduler = create_provider(components.repos.providers, "Cron", Role.SCHEDULER)
    page = client.get("/portal/sign-in").get_data(as_text=True)
    refused = client.post(
        "/portal/sign-in/token", data={"csrf_token": csrf_of(page), "token": scheduler.token}
    )
    assert refused.status_code == 401
    signed = client.post(
        "/portal/sign-in/token", data={"csrf_token": csrf_of(page), "token": person.token}
    )
    assert signed.status_code == 303
    reasons = [e.details.get("reason") for e in events(components, "portal.sign_in")]
    assert reasons == ["not_a_person", None]


@pytest.fixture
def iap_signer():
    signer = IapSigner()
    with IapKeyServer(signer) as server:
        yield signer, server


def iap_client(components, server):
    behind_iap = components.config.replace(iap_audience=AUDIENCE, iap_certs_url=server.certs_url)
    from service.shell.components import build_components

    built = build_components(behind_iap)
    return create_app(components=built).test_client()


def test_behind_iap_only_a_correctly_signed_header_signs_in_as_its_account(components, iap_signer):
    signer, server = iap_signer
    client = iap_client(components, server)
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    good = signer.assertion("Sam@clinic.example")
    page = client.get("/portal/sign-in", headers={HEADER: good}).get_data(as_text=True)
    assert "Continue as sam@clinic.example" in page
    token = csrf_of(page)
    refused = {
        "forged": IapSigner(signer.key_id).assertion("sam@clinic.example"),
        "expired": signer.assertion("sam@clinic.example", issued_at=time.time() - 3600),
        "wrong audience": signer.assertion("sam@clinic.example", audience="/projects/1/other"),
        "missing": "",
    }
    for name, header in refused.items():
        response = client.post(
            "/portal/sign-in/iap", data={"csrf_token": token}, headers={HEADER: header}
        )
        assert response.status_code == 401, name
    assert client.get("/portal/", headers={HEADER: good}).status_code == 303  # not signed in yet
    signed = client.post("/portal/sign-in/iap", data={"csrf_token": token}, headers={HEADER: good})
    assert signed.status_code == 303
    dashboard = client.get("/portal/", headers={HEADER: good})
    assert dashboard.status_code == 200 and "Sam Staff" in dashboard.get_data(as_text=True)
    # The session still needs IAP's header on every request, and for the same person.
    assert client.get("/portal/").status_code == 401
    reasons = [e.details.get("reason") for e in events(components, "portal.sign_in")]
    assert reasons == [
        "bad_signature",
        "expired",
        "wrong_audience",
        "missing",
        None,
        "missing",
    ]
    success = events(components, "portal.sign_in")[-2]
    assert (success.outcome, success.actor, success.details["method"]) == ("success", staff, "iap")


def test_behind_iap_links_and_tokens_are_refused(components, iap_signer):
    signer, server = iap_signer
    client = iap_client(components, server)
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    header = {HEADER: signer.assertion("sam@clinic.example")}
    page = client.get("/portal/sign-in", headers=header).get_data(as_text=True)
    response = client.post(
        "/portal/sign-in/link",
        data={"csrf_token": csrf_of(page), "secret": link_secret(components, staff)},
        headers=header,
    )
    assert response.status_code == 400


def test_the_dashboard_counts_match_the_seeded_conversations(client, components, fake_graph):
    seeded = seed_clinic(client, fake_graph, components)
    sign_in(client, components, create_person(components, "sam@clinic.example", "Sam Staff"))
    html = client.get("/portal/").get_data(as_text=True)

    def figure(name):
        return re.search(rf'data-figure="{name}">([^<]*)<', html).group(1)

    assert figure("invited") == str(seeded.invited)
    assert figure("in_progress") == str(seeded.in_progress)
    assert figure("completed_now") == str(seeded.completed)
    assert figure("opted_out") == str(seeded.opted_out)
    assert figure("completed_today") == figure("completed_30_days") == str(seeded.completed)
    assert figure("completion_rate") == seeded.completion_rate
    assert figure("median") != "–"
    for step, waiting in seeded.at_step:
        assert re.search(
            rf'<tr data-step="{step}"><th scope="row">[^<]+</th><td>{waiting}</td>', html
        )
    assert "Maria" not in html


def test_each_page_of_intakes_and_each_record_view_is_audited(client, components, fake_graph):
    seed_clinic(client, fake_graph, components)
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    sign_in(client, components, staff)
    listing = client.get("/portal/intakes")
    html = listing.get_data(as_text=True)
    assert html.count("<td>Maria Fernanda Lopez</td>") == 2 and "<td>1980-02-03</td>" in html
    assert listing.headers["Cache-Control"] == "no-store"
    record_ids = re.findall(r'href="/portal/intakes/([0-9a-z]{16})"', html)
    record = client.get(f"/portal/intakes/{record_ids[0]}").get_data(as_text=True)
    assert "Calle Falsa 123" in record and "Metformin 500mg" in record
    assert "<title>Intake record · Intake portal</title>" in record
    listed = events(components, "portal.intakes.list")
    viewed = events(components, "portal.intakes.view")
    assert sorted(listed[0].details["record_ids"]) == sorted(record_ids)
    assert (viewed[0].actor, viewed[0].details["record_id"]) == (staff, record_ids[0])
    assert "Maria" not in str([e.details for e in components.repos.audit.list()])


def test_the_cli_creates_a_person_and_prints_a_one_time_link(runner, components):
    created = runner.invoke(
        args=[
            "intake",
            "accounts",
            "create",
            "Ana@Clinic.example",
            "--name",
            "Ana",
            "--role",
            "admin",
        ]
    )
    assert created.exit_code == 0, created.output
    link = runner.invoke(args=["intake", "accounts", "login-link", "ana@clinic.example"])
    assert link.exit_code == 0, link.output
    assert re.search(r"/portal/sign-in#isl_[\w-]{43}$", link.stdout.strip())
    listed = runner.invoke(args=["intake", "accounts", "list"]).output
    assert "ana@clinic.example" in listed and "admin" in listed
    unknown = runner.invoke(args=["intake", "accounts", "login-link", "nobody@clinic.example"])
    assert unknown.exit_code != 0 and "no account has this email" in unknown.output


def test_no_portal_page_reflects_a_script_it_was_sent(app, client, components):
    script = '"><img src=x onerror=alert(1)>'
    sign_in(client, components, create_person(components, "ada@clinic.example", "Ada", "admin"))
    names = ("day", "after", "who", "what", "outcome", "from", "to", "ended", "sent")
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/portal") or "GET" not in rule.methods:
            continue
        path = re.sub(r"<[^>]+>", quote(script, safe=""), rule.rule)
        response = client.get(path, query_string={name: script for name in names})
        assert script not in response.get_data(as_text=True), rule.rule
        policy = response.headers.get("Content-Security-Policy", "")
        assert policy.startswith("default-src 'none'"), (rule.rule, response.status_code)
        checked += 1
    assert checked >= 8


def _start_export(client, **form):
    page = client.get("/portal/exports").get_data(as_text=True)
    return client.post("/portal/exports", data={"csrf_token": csrf_of(page), **form})


def test_an_export_with_a_bad_format_or_days_is_refused_and_nothing_is_queued(client, components):
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    sign_in(client, components, staff)
    for form in (
        {"format": "pdf"},
        {"format": "csv", "date_from": "2026-12-02", "date_to": "2026-12-01"},
        {"format": "csv", "date_from": "<script>alert(1)</script>"},
    ):
        refused = _start_export(client, **form)
        assert refused.status_code == 400
        assert "<script>alert(1)</script>" not in refused.get_data(as_text=True)
    assert components.repos.export_jobs.recent() == []


def test_an_export_job_is_seen_and_downloaded_by_its_owner_and_admins_only(client, components):
    archive_record(components, make_record())
    sam = create_person(components, "sam@clinic.example", "Sam Staff")
    kim = create_person(components, "kim@clinic.example", "Kim Staff")
    ada = create_person(components, "ada@clinic.example", "Ada Admin", "admin")
    sign_in(client, components, sam)
    started = _start_export(client, format="csv")
    assert started.status_code == 303
    (job,) = components.repos.export_jobs.recent()
    assert components.export_runner.wait_idle(60)
    progress = client.get(f"/portal/exports/{job.job_id}/progress").json
    assert progress == {"status": "ready", "done": 1, "total": 1, "records": 1, "error": None}
    link = client.get(f"/portal/exports/{job.job_id}/download")
    assert link.status_code == 303 and link.location.startswith("/exports/")
    zipped = client.get(link.location)
    assert zipped.status_code == 200
    assert unzip(zipped.get_data(), todays_password(components.config))[0] == "intakes.csv"

    sign_in(client, components, kim)
    assert client.get(f"/portal/exports/{job.job_id}/progress").status_code == 404
    assert client.get(f"/portal/exports/{job.job_id}/download").status_code == 404
    assert job.job_id not in client.get("/portal/exports").get_data(as_text=True)
    sign_in(client, components, ada)
    assert job.job_id in client.get("/portal/exports").get_data(as_text=True)
    assert client.get(f"/portal/exports/{job.job_id}/download").status_code == 303


def test_an_invitation_the_graph_api_refused_is_listed_as_a_failed_delivery(
    client, components, fake_graph
):
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    sign_in(client, components, staff)
    page = client.get("/portal/invitations").get_data(as_text=True)
    fake_graph.fail_next(3, status=500, code=131000)
    refused = client.post(
        "/portal/invitations", data={"csrf_token": csrf_of(page), "phone": "+34 622 000 124"}
    )
    assert refused.status_code == 503
    listed = client.get("/portal/invitations").get_data(as_text=True)
    assert "failed delivery" in listed and "+34 ••• ••• 124" in listed


def test_a_service_with_the_portal_switched_off_has_no_portal(components):
    switched_off = components.config.replace(portal_enabled=False)
    webhook_only = create_app(components=dataclasses.replace(components, config=switched_off))
    client = webhook_only.test_client()
    assert client.get("/portal/").status_code == 404
    assert client.get("/portal/sign-in").status_code == 404
