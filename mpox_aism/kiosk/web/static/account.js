"use strict";
// Change my password (any account) and, for admins, the live sessions with "End" buttons.
const $ = id => document.getElementById(id);

function detail(body, status) {
  if (typeof body.detail === "string") return body.detail;
  return body.detail ? JSON.stringify(body.detail) : "HTTP " + status;
}

$("password-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const error = $("password-error"), done = $("password-done");
  error.hidden = done.hidden = true;
  if ($("new").value !== $("again").value) {
    error.textContent = "The two new passwords differ.";
    error.hidden = false;
    return;
  }
  $("change").disabled = true;
  try {
    const r = await postWithCsrf("/api/password", {headers: {"Content-Type": "application/json"},
      body: JSON.stringify({current: $("current").value, new: $("new").value})});
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) { location.href = "/login"; return; }
    if (!r.ok) throw new Error(r.status === 429 ? "Locked for " + r.headers.get("Retry-After") +
                                                   " s after too many wrong passwords." : detail(body, r.status));
    $("password-form").reset();
    done.textContent = "Password changed. " + body.other_sessions_ended + " other session(s) ended.";
    done.hidden = false;
    loadSessions();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  } finally {
    $("change").disabled = false;
  }
});

async function endSessions(url) {
  const s = await kioskSession;
  const r = await fetch(url, {method: "DELETE", headers: {"X-CSRF-Token": s.csrf}});
  if (r.status === 401) { location.href = "/login"; return; }
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    $("sessions-error").textContent = "Not ended: " + detail(body, r.status);
    $("sessions-error").hidden = false;
  }
  loadSessions();
}

async function loadSessions() {
  const s = await kioskSession;
  if (s.role !== "admin") return;
  $("sessions-panel").hidden = false;
  const r = await fetch("/api/sessions", {cache: "no-store"});
  if (r.status === 401) { location.href = "/login"; return; }
  if (!r.ok) return;
  const rows = (await r.json()).map(x => {
    const end = el("button", {type: "button", className: "end", textContent: "End"});
    end.addEventListener("click", () => endSessions("/api/sessions/" + encodeURIComponent(x.id)));
    const all = el("button", {type: "button", className: "end-all", textContent: "End all of " + x.user + "'s"});
    all.addEventListener("click", () => endSessions("/api/users/" + encodeURIComponent(x.user) + "/sessions"));
    const tr = el("tr", {className: x.current ? "current" : ""},
      el("td", {textContent: x.user}), el("td", {textContent: x.role}),
      el("td", {textContent: new Date(x.created).toLocaleString()}),
      el("td", {textContent: new Date(x.last_seen).toLocaleString()}),
      el("td", {textContent: x.address}), el("td", {}, end, all));
    tr.dataset.session = x.id;
    tr.dataset.user = x.user;
    return tr;
  });
  $("sessions").tBodies[0].replaceChildren(...rows);
}

loadSessions().catch(() => {});
