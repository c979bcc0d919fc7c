"""The simulator in a real browser (Debian's chromium through Playwright): a patient completes
the intake by typing and tapping, a second patient chats in another tab, and the provider panel
exports the record into a zip that opens with the password the page shows. Another patient
hides their number behind a username and is answered by their BSUID.

Screenshots go to tests/artifacts/ (git-ignored). Set UPDATE_DOCS_SCREENSHOT=1 to also refresh
docs/simulator.png, the one the README shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyzipper

from devtools.simulator import SimulatedPatient
from service.domain.identity import PatientIdentity
from tests.support.browser import ARTIFACTS, BROWSER_WAIT_MS, refresh_docs_screenshot
from tests.support.servers import simulator_server

ROOT = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = ROOT / "docs" / "simulator.png"
WAIT_MS = BROWSER_WAIT_MS


class ChatTab:
    """One browser tab on /dev/chat, driven as a person would: typing and tapping."""

    def __init__(self, page: Any) -> None:
        from playwright.sync_api import expect

        self.page = page
        self.expect = expect
        self.bot = page.locator(".msg.bot")
        self.errors: list[str] = []
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console", lambda message: message.type == "error" and self.errors.append(message.text)
        )

    def open_patient(self, phone: str, shown_as: str) -> None:
        self.page.get_by_label("Patient phone number").fill(phone)
        self.page.get_by_role("button", name="Open chat").click()
        self.expect(self.page.locator("#chat-with")).to_have_text(shown_as)

    def _after(self, action: Any, reply: str) -> None:
        before = self.bot.count()
        action()
        self.expect(self.bot.nth(before)).to_be_visible()
        self.expect(self.bot.last).to_contain_text(reply)

    def says(self, text: str, reply: str) -> None:
        box = self.page.get_by_label("Message", exact=True)

        def type_and_enter() -> None:
            box.fill(text)
            box.press("Enter")

        self._after(type_and_enter, reply)

    def taps(self, title: str, reply: str) -> None:
        button = self.bot.last.get_by_role("button", name=title, exact=True)
        self._after(button.click, reply)

    def presses_with_keyboard(self, title: str, reply: str) -> None:
        button = self.bot.last.get_by_role("button", name=title, exact=True)

        def focus_and_enter() -> None:
            button.focus()
            self.page.keyboard.press("Enter")

        self._after(focus_and_enter, reply)

    def picks_from_list(self, list_button: str, row: str, reply: str) -> None:
        self.bot.last.get_by_role("button", name=list_button).click()
        row_button = self.bot.last.get_by_role("group", name=list_button).get_by_role(
            "button", name=row
        )
        self._after(row_button.click, reply)


def test_a_newcomer_completes_an_intake_in_the_browser_and_exports_it(
    config, browser, tmp_path: Path
):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "gunicorn.log"
    with simulator_server(config, log_path) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        maria = ChatTab(context.new_page())
        maria.page.goto(f"{base}/dev/chat")
        maria.open_patient("+34 611 222 333", "+34 611 22 23 33")

        maria.says("hello", "Which language")
        # A second patient, in another tab, at the same time.
        john = ChatTab(context.new_page())
        john.page.goto(f"{base}/dev/chat?phone=%2B12025550143")
        john.expect(john.page.locator("#chat-with")).to_have_text("+1 202-555-0143")
        john.says("<b>hola</b>", "Which language")
        # What a patient types is shown as text, never turned into HTML.
        john.expect(john.page.locator(".msg.patient").first).to_contain_text("<b>hola</b>")
        assert john.page.locator("#messages b").count() == 0
        john.taps("Español", "información personal")

        maria.taps("English", "personal health information")
        maria.taps("Yes, I agree", "full name")
        maria.says("Maria Fernanda Lopez", "date of birth")
        maria.says("31/02/1980", "does not exist")
        maria.says("03/02/1980", "gender")
        maria.presses_with_keyboard("Female", "home address")
        maria.says("Calle Falsa 123, 28013 Madrid", "medical conditions")
        maria.says("Type 2 diabetes, hypertension", "medications")
        maria.says("Metformin 500mg", "Is everything correct?")
        maria.taps("Edit", "Which answer would you like to change?")
        maria.picks_from_list("Choose answer", "Address", "home address")
        maria.says("Calle Mayor 5, 28013 Madrid", "Is everything correct?")
        maria.taps("Confirm", "Thank you!")
        reference = maria.bot.last.locator("strong").inner_text()

        page = maria.page
        support = page.locator("#support-fields")
        maria.expect(support.locator("[data-field=status]")).to_have_text("completed")
        maria.expect(support.locator("[data-field=invalid_answers]")).to_have_text("1")
        maria.expect(page.locator(".msg.bot .ticks.read").last).to_be_visible()
        assert "Maria" not in page.locator("aside").inner_text()
        assert "información" not in page.locator("#messages").inner_text()
        page.screenshot(path=str(ARTIFACTS / "simulator-chat.png"))

        password = page.locator("#export-password")
        maria.expect(password).not_to_have_text("loading…")
        page.get_by_role("button", name="Export CSV").click()
        link = page.locator("#download-link")
        maria.expect(link).to_be_visible()
        maria.expect(page.locator("#export-result")).to_contain_text("1 record exported")
        page.locator("#provider-panel").screenshot(path=str(ARTIFACTS / "simulator-provider.png"))
        page.screenshot(path=str(ARTIFACTS / "simulator.png"))
        with page.expect_download() as download_info:
            link.click()
        zip_path = tmp_path / "export.zip"
        download_info.value.save_as(zip_path)

        phone = browser.new_page(viewport={"width": 375, "height": 812})
        phone.goto(f"{base}/dev/chat?phone=%2B34611222333")
        maria.expect(phone.locator(".msg.bot").last).to_contain_text("Thank you!")
        phone.screenshot(path=str(ARTIFACTS / "simulator-375px.png"))
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        phone.close()

        with pyzipper.AESZipFile(zip_path) as archive:
            archive.setpassword(password.inner_text().encode())
            exported = archive.read("intakes.csv").decode("utf-8-sig")
        assert maria.errors == [] and john.errors == []
        context.close()

    assert "Maria Fernanda Lopez" in exported
    assert "Calle Mayor 5, 28013 Madrid" in exported and "Calle Falsa" not in exported
    assert reference
    assert "Maria" not in log_path.read_text()
    refresh_docs_screenshot(ARTIFACTS / "simulator.png", DOCS_SCREENSHOT)


def test_a_patient_who_hides_their_number_chats_under_a_username_in_the_browser(
    config, components, browser, tmp_path: Path
):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "gunicorn.log"
    patient = SimulatedPatient("34622333444", hides_number=True)
    # Every way the page could write the number (the + and the country code stripped too).
    number_forms = ["+34 622 33 34 44", "622 33 34 44", "34622333444", "622333444"]
    chat_name = f"@{patient.username} ({patient.bsuid})"
    with simulator_server(config, log_path) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        ana = ChatTab(context.new_page())
        page = ana.page
        page.goto(f"{base}/dev/chat?phone=%2B34622333444")
        ana.expect(page.locator("#chat-with")).to_have_text("+34 622 33 34 44")

        toggle = page.get_by_label("Write with a WhatsApp username (hide my number)")
        toggle.focus()
        page.keyboard.press("Space")
        ana.expect(toggle).to_be_checked()
        ana.expect(page.locator("#chat-with")).to_have_text(chat_name)

        ana.says("hello", "Which language")
        ana.taps("English", "personal health information")
        ana.taps("Yes, I agree", "full name")
        ana.says("Ana Garcia Ruiz", "date of birth")
        support = page.locator("#support-fields")
        ana.expect(support.locator("[data-field=status]")).to_have_text("in_progress")
        ana.expect(page.locator(".msg.bot .ticks.read").last).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "simulator-username.png"))
        # The number field is the developer's control that picks the simulated person; nothing
        # else on the page (chat, header, title, side panels, other fields) shows the number.
        other_fields = page.locator("input:not(#patient-phone), textarea").evaluate_all(
            "fields => fields.map((field) => field.value).join(' ')"
        )
        shown = " ".join([page.locator("body").inner_text(), page.title(), other_fields])
        for form in number_forms:
            assert form not in shown
        assert f"@{patient.username}" in page.title()

        # The same person on a fresh page load: same BSUID, same chat, still hidden.
        page.reload()
        ana.expect(page.locator("#chat-with")).to_have_text(chat_name)
        ana.expect(toggle).to_be_checked()
        ana.expect(ana.bot.last).to_contain_text("date of birth")
        assert ana.errors == []
        context.close()

    conversations = components.repos.conversations
    assert conversations.find(PatientIdentity(phone=patient.wa_id)) is None
    assert conversations.find(PatientIdentity(bsuid=patient.bsuid)) is not None
    log = log_path.read_text()
    for secret in [*number_forms, patient.bsuid, "Ana Garcia"]:
        assert secret not in log
