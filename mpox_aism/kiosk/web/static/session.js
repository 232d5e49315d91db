"use strict";
// The logged-in staff member and the session's CSRF token; every state-changing request carries it.
const kioskSession = fetch("/api/session", {cache: "no-store"}).then(r => {
  if (r.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
  return r.json();
});

async function postWithCsrf(url, options = {}) {
  const s = await kioskSession;
  const headers = Object.assign({}, options.headers || {}, {"X-CSRF-Token": s.csrf});
  return fetch(url, Object.assign({}, options, {method: "POST", headers: headers}));
}

kioskSession.then(s => {
  const who = document.getElementById("who");
  if (who) who.textContent = s.user + " (" + s.role + ")";
  const out = document.getElementById("logout");
  if (out) out.addEventListener("click", async () => {
    await postWithCsrf("/api/logout");
    location.href = "/login";
  });
}).catch(() => {});
