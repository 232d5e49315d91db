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

// Acknowledge / Mark reviewed on one event (both staff pages): who acted is the logged-in account. ``refresh``
// redraws the list afterwards, because the state follows the rule over every action, not just this one.
async function sendReview(ev, action, item, refresh) {
  item.buttons.forEach(b => b.disabled = true);
  try {
    const r = await postWithCsrf("/api/events/" + encodeURIComponent(ev.event_id) + "/review", {
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({action: action, note: ""})});
    const body = await r.json();
    if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    item.msg.textContent = "";
    refresh();
  } catch (e) {
    item.msg.textContent = "Not recorded: " + e.message;
  } finally {
    item.buttons.forEach(b => b.disabled = false);
  }
}

function showState(item, review, history) {
  item.state.textContent = stateText(review);
  item.history.textContent = historyText(history);
  item.li.dataset.review = review ? review.action : "";
}

// The event card both staff pages show: the pictures (only when the kiosk's privacy settings let them leave
// the box: they are in the event then), the decision, state and history, Acknowledge / Mark reviewed.
// ``headline`` goes before the decision (the console's station), ``extras`` after the history, ``actions``
// after the two buttons; the page adds its own listeners to those.
function eventCard(ev, refresh, {headline = [], extras = [], actions = []} = {}) {
  const pics = el("div", {className: "pics"});
  if (ev.crop_jpeg_base64) pics.append(el("img", {className: "crop", alt: "crop",
                                                  src: "data:image/jpeg;base64," + ev.crop_jpeg_base64}));
  if (ev.gradcam_jpeg_base64) pics.append(el("img", {className: "gradcam", alt: "Grad-CAM",
                                                     src: "data:image/jpeg;base64," + ev.gradcam_jpeg_base64}));
  const state = el("div", {className: "state"});
  const history = el("div", {className: "history note"});
  const msg = el("div", {className: "error"});
  const ack = el("button", {type: "button", className: "ack", textContent: "Acknowledge"});
  const rev = el("button", {type: "button", className: "mark-reviewed", textContent: "Mark reviewed"});
  const info = el("div", {className: "info"},
    el("div", {}, ...headline, el("span", {className: "badge " + ev.decision, textContent: stateWords(ev.decision)}),
       " ", el("strong", {className: "label", textContent: ev.label}), " ",
       el("span", {className: "probability", textContent: (100 * ev.probability).toFixed(1) + " %"})),
    el("div", {className: "reason note", textContent: reasonWords(ev.reason)}),
    el("div", {className: "note", textContent: "camera " + ev.camera + " · " + new Date(ev.time).toLocaleString()}),
    state, history, ...extras, el("div", {className: "actions"}, ack, rev, ...actions), msg);
  const li = el("li", {className: "event"}, pics, info);
  li.dataset.eventId = ev.event_id;
  const item = {li, info, state, history, msg, buttons: [ack, rev]};
  ack.addEventListener("click", () => sendReview(ev, "acknowledged", item, refresh));
  rev.addEventListener("click", () => sendReview(ev, "reviewed", item, refresh));
  return item;
}

// Both staff pages' event list, patched, not rebuilt: images are decoded once and a click is never lost to a
// redraw. ``shown``: event_id -> item (made by ``makeEvent``); ``update(item, ev)`` shows what may change.
async function refreshEventList(url, shown, makeEvent, update, place) {
  const errBox = document.getElementById("events-error");
  try {
    const r = await fetch(url, {cache: "no-store"});
    if (r.status === 401) { location.href = "/login"; return; }  // this session was ended (logged out elsewhere)
    if (!r.ok) throw new Error("HTTP " + r.status);
    const events = await r.json();
    const list = document.getElementById("events");
    const keep = new Set();
    events.forEach((ev, i) => {
      keep.add(ev.event_id);
      let item = shown.get(ev.event_id);
      if (!item) { item = makeEvent(ev); shown.set(ev.event_id, item); }
      showState(item, ev.review, ev.history);
      update(item, ev);
      if (list.children[i] !== item.li) list.insertBefore(item.li, list.children[i] || null);
    });
    for (const [id, item] of shown) if (!keep.has(id)) { item.li.remove(); shown.delete(id); }
    document.getElementById("no-events").hidden = events.length > 0;
    errBox.hidden = true;
  } catch (e) {
    errBox.textContent = "Cannot reach the " + place + ": " + e.message;
    errBox.hidden = false;
  }
}
