"use strict";
const $ = id => document.getElementById(id);

$("login-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  $("error").hidden = true;
  $("login").disabled = true;
  try {
    const t = await (await fetch("/api/login", {cache: "no-store"})).json();
    const r = await fetch("/api/login", {method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": t.csrf},
      body: JSON.stringify({name: $("name").value.trim(), password: $("password").value})});
    if (r.ok) { location.href = "/"; return; }
    const body = await r.json().catch(() => ({}));
    const wait = r.headers.get("Retry-After");
    $("error").textContent = r.status === 429 ? "Locked for " + wait + " s after too many wrong passwords."
                                              : (body.detail || "HTTP " + r.status);
    $("error").hidden = false;
  } catch (e) {
    $("error").textContent = "Cannot reach the kiosk: " + e.message;
    $("error").hidden = false;
  } finally {
    $("login").disabled = false;
  }
});
