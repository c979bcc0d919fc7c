"""The staff portal in a real browser (Debian's chromium through Playwright), served by
gunicorn as in production: staff sign in with a one-time link, check the dashboard against
seeded patients, open a record, send an invitation and run an Excel export, following its
progress bar, then download it and open it with the password the page shows; an
administrator creates and revokes an account and the revoked person's open page is signed
out; a form without its CSRF token is refused; a page left idle for 16 minutes is signed out;
the pages fit a 375 px phone and work from the keyboard.

Screenshots go to tests/artifacts/ (git-ignored); docs/portal-dashboard.png, the one the
README shows, and docs/portal-exports.png are refreshed with UPDATE_DOCS_SCREENSHOT=1 (or
when missing).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from repositories.signins import SESSIONS
from tests.support.browser import ARTIFACTS, refresh_docs_screenshot
from tests.support.exports import unzip, xlsx_rows
from tests.support.portal import create_person, link_secret, seed_clinic
from tests.support.servers import gunicorn

ROOT = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = ROOT / "docs" / "portal-dashboard.png"
EXPORTS_SCREENSHOT = ROOT / "docs" / "portal-exports.png"
# What sticks out of the window, to say why a page scrolls sideways.
WIDER = """[...document.querySelectorAll('body *')]
  .filter((node) => node.getBoundingClientRect().right > window.innerWidth + 0.5)
  .map((node) => node.tagName + '.' + node.className + '#' + node.id).slice(0, 8)"""


class PortalTab:
    """One person's browser on the portal, watching for script errors and CSP violations."""

    def __init__(self, browser: Any, base: str, width: int = 1280, height: int = 900) -> None:
        from playwright.sync_api import expect

        self.expect = expect
        self.base = base
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            lambda message: message.type == "error" and self.errors.append(message.text),
        )

    def signs_in_with_keyboard(self, secret: str) -> None:
        """Open the one-time link as it was handed over; the page fills it in; Enter signs in."""
        self.page.goto(f"{self.base}/portal/sign-in#{secret}")
        self.expect(self.page.get_by_label("Sign-in link or code")).to_have_value(secret)
        assert secret not in self.page.url  # the page forgets it once read
        self.page.keyboard.press("Enter")  # the Sign in button has the focus
        self.expect(self.page).to_have_title("Dashboard · Intake portal")

    def follows(self, link: str) -> None:
        self.page.get_by_role("navigation", name="Portal").get_by_role("link", name=link).click()

    def figure(self, name: str) -> str:
        return self.page.locator(f"[data-figure={name}]").inner_text()


def test_staff_and_an_administrator_do_their_work_in_the_portal(
    browser, config, client, components, fake_graph, tmp_path: Path
):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    seeded = seed_clinic(client, fake_graph, components)
    staff = create_person(components, "sam@clinic.example", "Sam Staff")
    admin = create_person(components, "ada@clinic.example", "Ada Admin", "admin")
    log_path = tmp_path / "gunicorn.log"
    # Each export holds for 2 s before it reads anything, so the page shows it running.
    with gunicorn(config.replace(failpoints="export.building:pause=2"), log_path) as base:
        sam = PortalTab(browser, base)
        sam.signs_in_with_keyboard(link_secret(components, staff))
        assert sam.figure("invited") == str(seeded.invited)
        assert sam.figure("in_progress") == str(seeded.in_progress)
        assert sam.figure("completed_now") == str(seeded.completed)
        assert sam.figure("opted_out") == str(seeded.opted_out)
        assert sam.figure("completed_today") == str(seeded.completed)
        assert sam.figure("completion_rate") == seeded.completion_rate
        for step, waiting in seeded.at_step:
            bar = sam.page.locator(f"svg.funnel g[data-step={step}] text.count")
            assert bar.text_content() == str(waiting), step
        sam.page.screenshot(path=str(ARTIFACTS / "portal-dashboard.png"), full_page=True)

        sam.follows("Intakes")
        sam.expect(sam.page).to_have_title("Intakes · Intake portal")
        sam.expect(sam.page.locator("table.records tbody tr")).to_have_count(seeded.completed)
        sam.page.get_by_role("link", name="Open the record of Maria Fernanda Lopez").first.click()
        sam.expect(sam.page.locator("dl.record")).to_contain_text("Calle Falsa 123, 28013 Madrid")
        assert "Maria" not in sam.page.title() and "Maria" not in sam.page.url

        sam.follows("Invitations")
        sam.page.get_by_label("Patient's WhatsApp number (international format)").fill(
            "+34 622 000 123"
        )
        sam.page.get_by_role("button", name="Send invitation").click()
        sam.expect(sam.page.get_by_role("status")).to_have_text("Invitation sent.")
        first_row = sam.page.locator("table.invitations tbody tr").first
        sam.expect(first_row).to_contain_text("+34 ••• ••• 123")
        sam.expect(first_row).to_contain_text("Sam Staff")
        sam.expect(first_row).to_contain_text("sent")
        assert "622000" not in sam.page.url and "622 000" not in sam.page.content()
        assert [m["body"]["type"] for m in fake_graph.messages_to("34622000123")] == ["template"]

        sam.follows("Exports")
        sam.page.get_by_label("Excel").check()
        sam.page.get_by_role("button", name="Start export").click()
        sam.expect(sam.page.locator("p.notice")).to_contain_text("Export started")
        job = sam.page.locator("table.exports tbody tr").first
        bar = job.get_by_role("progressbar", name="Export progress")
        sam.expect(bar).to_be_visible()  # the server holds the export a moment (failpoint)
        sam.expect(bar).to_have_attribute("max", str(seeded.completed))
        sam.page.screenshot(path=str(ARTIFACTS / "portal-exports.png"), full_page=True)
        download = job.get_by_role("link", name="Download")
        sam.expect(download).to_be_visible(timeout=60_000)  # the bar ran to the end
        sam.expect(job).to_contain_text(f"{seeded.completed} records")
        sam.context.grant_permissions(["clipboard-read", "clipboard-write"])
        sam.page.get_by_role("button", name="Copy password").click()
        sam.expect(sam.page.locator(".copied")).not_to_be_empty()
        password = sam.page.get_by_label("Password", exact=True).input_value()
        with sam.page.expect_download() as arriving:
            download.click()
        name, content = unzip(Path(arriving.value.path()).read_bytes(), password)
        assert name == "intakes.xlsx" and len(xlsx_rows(content)) == seeded.completed
        assert "Maria" not in sam.page.url

        phone = PortalTab(browser, base, width=375, height=812)
        phone.signs_in_with_keyboard(link_secret(components, staff))
        for link in ("Intakes", "Exports", "Invitations", "Dashboard"):
            phone.follows(link)
            phone.expect(phone.page).to_have_title(f"{link} · Intake portal")
            assert phone.page.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth"
            ), (link, phone.page.evaluate(WIDER))
        phone.page.screenshot(path=str(ARTIFACTS / "portal-375px.png"), full_page=True)

        ada = PortalTab(browser, base)
        ada.signs_in_with_keyboard(link_secret(components, admin))
        ada.follows("Accounts")
        ada.page.get_by_label("Email").fill("nia@clinic.example")
        ada.page.get_by_label("Display name").fill("Nia New")
        ada.page.get_by_label("Role", exact=True).select_option("staff")
        ada.page.get_by_role("button", name="Create account").click()
        issued = ada.page.get_by_role("textbox", name="Sign-in link")
        ada.expect(issued).to_be_visible()
        new_link = issued.input_value()
        assert new_link.startswith(f"{base}/portal/sign-in#isl_")
        nia = PortalTab(browser, base)
        nia.signs_in_with_keyboard(new_link.rsplit("#", 1)[1])
        nia.expect(nia.page.locator(".who")).to_contain_text("Nia New")
        nia_id = components.repos.providers.by_email("nia@clinic.example").provider_id

        # A form whose CSRF token was taken out is refused, and changes nothing.
        ada.follows("Accounts")
        ada.page.locator("form:has(#role-" + staff + ") input[name=csrf_token]").evaluate(
            "field => field.remove()"
        )
        ada.page.get_by_label("Role of Sam Staff").select_option("admin")
        ada.page.get_by_role("button", name="Change role of Sam Staff").click()
        ada.expect(ada.page).to_have_title("Form refused · Intake portal")
        assert components.repos.providers.get(staff).role == "staff"
        assert [error for error in ada.errors if "400" not in error] == []
        ada.errors.clear()  # the browser reports the refused form's 400 as a console error

        ada.follows("Accounts")
        ada.page.get_by_role("button", name="Revoke Sam Staff").click()
        row = ada.page.locator(f"tr[data-account='{staff}']")
        ada.expect(row).to_contain_text("revoked")
        sam.page.reload()
        sam.expect(sam.page).to_have_title("Sign in · Intake portal")
        sam.expect(sam.page.get_by_role("status")).to_contain_text("no longer active")

        ada.follows("Audit log")
        ada.page.get_by_label("What (action starts with)").fill("account.")
        ada.page.get_by_role("button", name="Filter").click()
        ada.expect(ada.page.locator("table.audit tbody")).to_contain_text("account.revoke")
        ada.follows("Keys and secrets")
        ada.expect(ada.page.locator("main")).to_contain_text("ZIP_PASSWORD")
        assert components.config.zip_password not in ada.page.content()

        # Nia leaves her page open for 16 minutes: her next click finds her signed out.
        idle_since = datetime.now(UTC) - timedelta(minutes=16)
        for session in components.repos.firestore.collection(SESSIONS).stream():
            if session.get("provider_id") == nia_id:
                session.reference.update({"last_seen_at": idle_since})
        nia.follows("Intakes")
        nia.expect(nia.page).to_have_title("Sign in · Intake portal")
        nia.expect(nia.page.get_by_role("status")).to_contain_text("without activity")

        for tab in (sam, phone, ada, nia):
            assert tab.errors == [], tab.errors
            tab.context.close()

    log = log_path.read_text()
    assert "Maria" not in log and "622000123" not in log and "isl_" not in log
    refresh_docs_screenshot(ARTIFACTS / "portal-dashboard.png", DOCS_SCREENSHOT)
    refresh_docs_screenshot(ARTIFACTS / "portal-exports.png", EXPORTS_SCREENSHOT)
