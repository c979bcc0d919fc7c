// The simulator page. Plain DOM, no build step. Every text from the server (bot replies, what
// a patient typed, errors) goes through textContent or createTextNode, never innerHTML.
"use strict";

(() => {
  const POLL_ACTIVE_MS = 700;
  const POLL_IDLE_MS = 3000;
  const POLL_HIDDEN_MS = 10000;
  const ACTIVE_FOR_MS = 60000;
  const STATUS_LABELS = { sent: "Sent", delivered: "Delivered", read: "Read" };
  const TICKS = { sent: "✓", delivered: "✓✓", read: "✓✓" };

  const state = {
    waId: null,
    // The patient writes under a username: the bot is told their BSUID, never the number.
    hideNumber: false,
    last: 0,
    bySeq: new Map(),
    unread: new Set(),
    queue: Promise.resolve(),
    pollTimer: null,
    activeUntil: 0,
  };
  const byId = (id) => document.getElementById(id);

  async function api(method, url, body) {
    const options = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    let data = {};
    try {
      data = await response.json();
    } catch (error) {
      data = {};
    }
    if (!response.ok) {
      const message = data && data.error && data.error.message;
      throw new Error(message || `the server answered ${response.status}`);
    }
    return data;
  }

  // Requests that make the server call its own webhook go one at a time, in order.
  function enqueue(task) {
    state.queue = state.queue.then(task, task);
    return state.queue;
  }

  function showError(id, error) {
    const element = byId(id);
    element.textContent = error ? String(error.message || error) : "";
    element.hidden = !error;
  }

  // WhatsApp's *bold*, rendered as <strong> built from text nodes.
  function appendFormatted(parent, text) {
    const pattern = /\*([^*\n]+)\*/g;
    let from = 0;
    for (const match of text.matchAll(pattern)) {
      parent.append(document.createTextNode(text.slice(from, match.index)));
      const strong = document.createElement("strong");
      strong.textContent = match[1];
      parent.append(strong);
      from = match.index + match[0].length;
    }
    parent.append(document.createTextNode(text.slice(from)));
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function time(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime())
      ? ""
      : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function choiceButton(kind, choice, label) {
    const button = element("button", null);
    button.type = "button";
    button.dataset.choiceId = choice.id;
    button.append(element("span", "row-title", label || choice.title));
    if (choice.description) button.append(element("span", "row-description", choice.description));
    button.addEventListener("click", () =>
      sendMessage({ reply: { type: kind, id: choice.id, title: choice.title } }),
    );
    return button;
  }

  function renderList(bubble, entry) {
    const panelId = `list-${entry.seq}`;
    const toggle = element("button", "list-toggle", `☰ ${entry.list_button}`);
    toggle.type = "button";
    toggle.setAttribute("aria-expanded", "false");
    toggle.setAttribute("aria-controls", panelId);
    const rows = element("div", "list-rows");
    rows.id = panelId;
    rows.hidden = true;
    rows.setAttribute("role", "group");
    rows.setAttribute("aria-label", entry.list_button);
    for (const section of entry.sections) {
      if (section.title) rows.append(element("p", "section-title", section.title));
      for (const row of section.rows) rows.append(choiceButton("list_reply", row));
    }
    toggle.addEventListener("click", () => {
      const open = toggle.getAttribute("aria-expanded") === "true";
      toggle.setAttribute("aria-expanded", String(!open));
      rows.hidden = open;
      if (!open) rows.querySelector("button")?.focus();
    });
    const choices = element("div", "choices");
    choices.append(toggle, rows);
    bubble.append(choices);
  }

  function renderMeta(bubble, entry) {
    let meta = bubble.querySelector(".meta");
    if (!meta) {
      meta = element("span", "meta");
      bubble.append(meta);
    }
    meta.replaceChildren(document.createTextNode(`${time(entry.at)} `));
    if (entry.direction === "bot") {
      const ticks = element("span", `ticks ${entry.status}`, TICKS[entry.status] || "");
      ticks.setAttribute("role", "img");
      ticks.setAttribute("aria-label", STATUS_LABELS[entry.status] || entry.status);
      ticks.title = STATUS_LABELS[entry.status] || entry.status;
      ticks.dataset.status = entry.status;
      meta.append(ticks);
    } else if (entry.webhook_status === null || entry.webhook_status === undefined) {
      meta.append(document.createTextNode("sending…"));
    } else if (entry.webhook_status !== 200) {
      meta.append(element("span", "failed", `webhook answered ${entry.webhook_status}`));
    } else {
      meta.append(element("span", "ticks", "✓"));
    }
  }

  function renderMessage(entry) {
    const bubble = element("div", `msg ${entry.direction}`);
    bubble.dataset.seq = entry.seq;
    bubble.dataset.kind = entry.kind;
    bubble.dataset.at = entry.at;
    if (entry.wamid) bubble.dataset.wamid = entry.wamid;
    bubble.append(element("span", "visually-hidden", entry.direction === "bot" ? "Bot: " : "You: "));
    if (entry.header) bubble.append(element("div", "header", entry.header));
    const body = element("div", "body");
    if (entry.kind === "template") {
      const language = entry.language && entry.language.code ? ` (${entry.language.code})` : "";
      body.append(element("span", "template", `Template message: ${entry.text}${language}`));
    } else {
      appendFormatted(body, entry.text || "");
    }
    bubble.append(body);
    if (entry.footer) bubble.append(element("div", "footer", entry.footer));
    if (entry.kind === "button") {
      const choices = element("div", "choices");
      choices.setAttribute("role", "group");
      choices.setAttribute("aria-label", "Reply buttons");
      for (const choice of entry.buttons) choices.append(choiceButton("button_reply", choice));
      bubble.append(choices);
    } else if (entry.kind === "list") {
      renderList(bubble, entry);
    }
    renderMeta(bubble, entry);
    return bubble;
  }

  function upsert(entry) {
    const known = state.bySeq.get(entry.seq);
    if (known) {
      renderMeta(known, entry);
      return false;
    }
    const bubble = renderMessage(entry);
    state.bySeq.set(entry.seq, bubble);
    const log = byId("messages");
    byId("empty-chat")?.remove();
    const later = [...log.children].find((child) => Number(child.dataset.seq) > entry.seq);
    log.insertBefore(bubble, later || null);
    state.last = Math.max(state.last, entry.seq);
    return true;
  }

  function scrollToEnd() {
    const log = byId("messages");
    log.scrollTop = log.scrollHeight;
  }

  function refreshTicks(statuses) {
    for (const bubble of state.bySeq.values()) {
      const wamid = bubble.dataset.wamid;
      const status = wamid && statuses[wamid];
      const ticks = bubble.querySelector(".ticks");
      if (status && ticks && ticks.dataset.status !== status) {
        renderMeta(bubble, { direction: "bot", status, at: bubble.dataset.at });
      }
    }
  }

  async function poll() {
    const waId = state.waId;
    if (!waId) return;
    try {
      const data = await api(
        "GET",
        `/dev/chat/messages?wa_id=${encodeURIComponent(waId)}&after=${state.last}`,
      );
      if (waId !== state.waId) return;
      const fresh = data.messages.filter(upsert);
      refreshTicks(data.statuses || {});
      if (fresh.length) {
        scrollToEnd();
        state.activeUntil = Date.now() + ACTIVE_FOR_MS;
        refreshSupport();
        acknowledge(fresh.filter((entry) => entry.direction === "bot").map((e) => e.wamid));
      }
      showError("send-error", null);
    } catch (error) {
      showError("send-error", error);
    } finally {
      schedulePoll();
    }
  }

  function schedulePoll(delay) {
    clearTimeout(state.pollTimer);
    const wait =
      delay ??
      (document.hidden
        ? POLL_HIDDEN_MS
        : Date.now() < state.activeUntil
          ? POLL_ACTIVE_MS
          : POLL_IDLE_MS);
    state.pollTimer = setTimeout(poll, wait);
  }

  // Who the page speaks for in requests that reach the webhook.
  function sender() {
    return { wa_id: state.waId, hide_number: state.hideNumber };
  }

  // The patient's phone reports delivery at once, and reading while this tab is visible.
  function acknowledge(wamids) {
    if (!wamids.length) return;
    const who = sender();
    for (const wamid of wamids) state.unread.add(wamid);
    enqueue(() => api("POST", "/dev/chat/status", { ...who, wamids, status: "delivered" }))
      .then(markRead)
      .catch((error) => showError("send-error", error));
  }

  function markRead() {
    if (document.hidden || !state.unread.size || !state.waId) return;
    const wamids = [...state.unread];
    const who = sender();
    state.unread.clear();
    return enqueue(() =>
      api("POST", "/dev/chat/status", { ...who, wamids, status: "read" }),
    ).then(() => schedulePoll(0));
  }

  function sendMessage(body) {
    const waId = state.waId;
    if (!waId) return Promise.resolve();
    const who = sender();
    state.activeUntil = Date.now() + ACTIVE_FOR_MS;
    return enqueue(async () => {
      try {
        const data = await api("POST", "/dev/chat/send", { ...who, ...body });
        if (waId === state.waId) {
          upsert(data.message);
          scrollToEnd();
        }
        showError("send-error", null);
      } catch (error) {
        showError("send-error", error);
      }
      schedulePoll(0);
    });
  }

  function formatField(name, value) {
    if (value === null || value === undefined || value === "") return "–";
    if (name === "last_error") {
      const when = value.at ? ` at ${new Date(value.at).toLocaleString()}` : "";
      return `code ${value.code ?? "?"} (${value.source || "unknown"})${when}`;
    }
    if (name.endsWith("_at")) return new Date(value).toLocaleString();
    return String(value);
  }

  async function refreshSupport() {
    const waId = state.waId;
    if (!waId) return;
    const hidden = state.hideNumber ? "1" : "0";
    try {
      const view = await api(
        "GET",
        `/dev/chat/conversation?wa_id=${encodeURIComponent(waId)}&hide_number=${hidden}`,
      );
      if (waId !== state.waId) return;
      for (const cell of document.querySelectorAll("#support-fields [data-field]")) {
        const name = cell.dataset.field;
        cell.textContent = view.exists
          ? formatField(name, view.fields[name])
          : name === "status"
            ? "no conversation yet"
            : "–";
      }
    } catch (error) {
      showError("send-error", error);
    }
  }

  async function loadKnownPatients() {
    try {
      const data = await api("GET", "/dev/chat/patients");
      const list = byId("known-patients");
      list.replaceChildren(
        ...data.patients.map((patient) => {
          const option = document.createElement("option");
          option.value = patient.display;
          return option;
        }),
      );
    } catch (error) {
      // The list is only a convenience; typing a number still works.
    }
  }

  // Each choice of patient outdates the ones before: the page opens its default patient as it
  // loads, and a number typed at once may be answered first; the older answer is dropped.
  let openings = 0;

  async function openPatient(phone) {
    const opening = ++openings;
    try {
      const patient = await api("GET", `/dev/chat/patient?phone=${encodeURIComponent(phone)}`);
      if (opening !== openings) return;
      showError("patient-error", null);
      state.waId = patient.wa_id;
      state.hideNumber = byId("hide-number").checked;
      state.last = 0;
      state.bySeq.clear();
      state.unread.clear();
      // A patient who hides their number is shown as WhatsApp shows them: by username.
      const shownAs = state.hideNumber ? `@${patient.username}` : patient.display;
      byId("patient-phone").value = patient.display;
      byId("chat-with").textContent = state.hideNumber ? `${shownAs} (${patient.user_id})` : shownAs;
      const empty = element("p", "empty", null);
      empty.id = "empty-chat";
      empty.append(document.createTextNode("Say "), element("q", null, "hello"));
      empty.append(document.createTextNode(" to start the intake form."));
      byId("messages").replaceChildren(empty);
      document.title = `${shownAs} · WhatsApp simulator`;
      const url = new URL(window.location.href);
      url.searchParams.set("phone", patient.display);
      if (state.hideNumber) url.searchParams.set("hide_number", "1");
      else url.searchParams.delete("hide_number");
      window.history.replaceState(null, "", url);
      refreshSupport();
      loadKnownPatients();
      schedulePoll(0);
    } catch (error) {
      showError("patient-error", error);
    }
  }

  function randomPatient() {
    const digits = Array.from({ length: 8 }, () => Math.floor(Math.random() * 10)).join("");
    return `+34 6${digits.slice(0, 2)} ${digits.slice(2, 5)} ${digits.slice(5)}`;
  }

  async function loadPassword() {
    try {
      const data = await api("GET", "/dev/provider/password");
      byId("export-password").textContent = data.password;
      byId("password-valid").textContent =
        `Valid until ${new Date(data.valid_until).toLocaleString()} (midnight UTC).`;
    } catch (error) {
      byId("export-password").textContent = "unavailable";
      byId("password-valid").textContent = String(error.message || error);
    }
  }

  async function exportRecords(button) {
    const result = byId("export-result");
    const buttons = document.querySelectorAll("#provider-panel button[data-format]");
    for (const each of buttons) each.disabled = true;
    result.replaceChildren(document.createTextNode("Building the export…"));
    try {
      const data = await api("POST", "/dev/provider/export", { format: button.dataset.format });
      // The service signed the link for its own address; open it from this page's origin.
      const signed = new URL(data.download_url);
      const link = element("a", "download-link", `Download ${data.format.toUpperCase()} zip`);
      link.href = signed.pathname + signed.search;
      link.id = "download-link";
      link.setAttribute("download", "");
      const records = `${data.records} record${data.records === 1 ? "" : "s"}`;
      const expires = new Date(data.expires_at).toLocaleString();
      result.replaceChildren(
        element("p", null, `${records} exported. The link expires at ${expires}.`),
        link,
        element("p", "hint", "Open the zip with today's export password shown above."),
      );
      await loadPassword();
    } catch (error) {
      result.replaceChildren(element("p", "error", `Export failed: ${error.message || error}`));
    } finally {
      for (const each of buttons) each.disabled = false;
    }
  }

  function showClock(data) {
    const ahead = data.ahead_hours ? ` (${data.ahead_hours} h ahead)` : "";
    byId("clock-now").textContent = `${new Date(data.now).toLocaleString()}${ahead}`;
  }

  async function advanceClock(button) {
    const buttons = document.querySelectorAll("#clock-panel button.clock");
    for (const each of buttons) each.disabled = true;
    try {
      const data = await api("POST", "/dev/clock", { hours: Number(button.dataset.hours) });
      showClock(data);
      const sent = data.reminders.queued;
      byId("clock-result").textContent =
        `Reminder task ran: ${sent} reminder${sent === 1 ? "" : "s"} sent, ` +
        `${data.reminders.postponed} postponed.`;
      state.activeUntil = Date.now() + ACTIVE_FOR_MS;
      schedulePoll(0);
    } catch (error) {
      byId("clock-result").textContent = `The clock did not move: ${error.message || error}`;
    } finally {
      for (const each of buttons) each.disabled = false;
    }
  }

  function init() {
    byId("patient-form").addEventListener("submit", (event) => {
      event.preventDefault();
      openPatient(byId("patient-phone").value);
    });
    byId("random-patient").addEventListener("click", () => openPatient(randomPatient()));
    // The same person, now writing the other way: their one chat is shown again.
    byId("hide-number").addEventListener("change", () => openPatient(byId("patient-phone").value));
    const composer = byId("composer");
    const text = byId("composer-text");
    composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = text.value;
      if (!value.trim()) return;
      text.value = "";
      sendMessage({ text: value });
    });
    text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        composer.requestSubmit();
      }
    });
    for (const chip of document.querySelectorAll(".chip[data-text]")) {
      chip.addEventListener("click", () => sendMessage({ text: chip.dataset.text }));
    }
    for (const button of document.querySelectorAll("#clock-panel button.clock")) {
      button.addEventListener("click", () => advanceClock(button));
    }
    api("GET", "/dev/clock").then(showClock, () => {});
    for (const button of document.querySelectorAll("#provider-panel button[data-format]")) {
      button.addEventListener("click", () => exportRecords(button));
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) {
        markRead();
        schedulePoll(0);
      }
    });
    openPatient(byId("patient-phone").value);
    loadPassword();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
