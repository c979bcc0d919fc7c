// A one-time sign-in link carries its secret after '#', which browsers never send to the
// server (so it stays out of request logs): put it in the sign-in form, then forget it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const field = document.getElementById("secret");
  const secret = window.location.hash.slice(1);
  if (field && secret) {
    field.value = secret;
    history.replaceState(null, "", window.location.pathname + window.location.search);
    field.form.querySelector("button[type=submit]").focus();
  }
});

// Exports: follow each running export's progress, then show the page again once it ended
// (its download button appears); copy today's password.
document.addEventListener("DOMContentLoaded", () => {
  const running = document.querySelectorAll("tr[data-progress-url]");
  running.forEach((row) => follow(row));
  document.querySelectorAll("button[data-copy]").forEach((button) => {
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      const said = button.parentElement.querySelector(".copied");
      try {
        await navigator.clipboard.writeText(field.value);
        said.textContent = "Copied.";
      } catch (error) {
        field.select(); // the browser refused: select it so Ctrl-C copies it
        said.textContent = "Press Ctrl-C (or Cmd-C) to copy.";
      }
    });
  });
});

function follow(row) {
  const bar = row.querySelector("progress");
  const count = row.querySelector("[data-count]");
  const state = row.querySelector("[data-state]");
  const tick = async () => {
    let job;
    try {
      const answer = await fetch(row.dataset.progressUrl, { credentials: "same-origin" });
      if (!answer.ok) throw new Error(String(answer.status));
      job = await answer.json();
    } catch (error) {
      setTimeout(tick, 3000);
      return;
    }
    state.textContent = job.status;
    if (job.total !== null) bar.max = Math.max(job.total, 1);
    bar.value = job.done;
    count.textContent = `${job.done} of ${job.total === null ? "?" : job.total} records`;
    if (job.status === "queued" || job.status === "running") {
      setTimeout(tick, 1000);
    } else {
      window.location.reload();
    }
  };
  setTimeout(tick, 500);
}
