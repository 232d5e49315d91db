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

// Decision states and review reasons in words (mpox_aism/contracts/decision.py): one wording for every page.
const STATE_WORDS = {suspected: "suspected", other_condition: "other condition", clear: "clear", review: "review"};
const REASON_WORDS = {
  unfamiliar: "unfamiliar: unlike the photos the model was trained on",
  too_few_crops: "too few crops: the person left before the model had seen enough",
  low_confidence: "low confidence: no class reaches the threshold",
  no_consensus: "the crops disagree on an alert",
  close_range_only: "only close-range crops point to an alert",
};
function stateWords(decision) { return STATE_WORDS[decision] || decision; }
function reasonWords(reason) { return reason ? (REASON_WORDS[reason] || reason) : ""; }

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

// An event's actions (mpox_aism/kiosk/actions.py): the state is the server's, under its one rule; the history is
// every action, wherever it was made (this page, a console's, the kiosk's), in the same order everywhere.
function actionText(a) {
  return a.action + " by " + a.by + " on " + a.origin + " at " + new Date(a.at).toLocaleString();
}
function stateText(review) { return review ? actionText(review) : "not yet reviewed"; }
function historyText(history) {
  return history && history.length > 1 ? "history: " + history.map(actionText).join(" · ") : "";
}
