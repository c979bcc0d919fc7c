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
