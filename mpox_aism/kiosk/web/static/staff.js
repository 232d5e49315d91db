"use strict";

// one live view per camera; the next frame is asked only after the last one loaded or failed
async function startCameras() {
  const box = document.getElementById("cameras");
  let names = [];
  try { names = await (await fetch("/api/cameras", {cache: "no-store"})).json(); } catch (e) { /* retried */ }
  if (!names.length) { setTimeout(startCameras, 5000); return; }
  for (const name of names) {
    const status = el("div", {className: "note", textContent: "waiting for a frame…"});
    const img = el("img", {alt: "live view of " + name});
    img.dataset.camera = name;
    const url = "/api/cameras/" + encodeURIComponent(name) + "/frame.jpg";
    const next = () => setTimeout(() => { img.src = url + "?t=" + Date.now(); }, 1000);
    img.addEventListener("load", () => { img.style.visibility = ""; status.textContent = "live"; next(); });
    img.addEventListener("error", () => {
      img.style.visibility = "hidden"; status.textContent = "no frame yet"; next();
    });
    img.src = url + "?t=" + Date.now();
    box.append(el("div", {className: "camera"}, el("strong", {textContent: name}), img, status));
  }
}

const shown = new Map();  // event_id -> {li, state, msg, buttons, choice, save, labelState, touched}

// what a reviewer may call a crop (the 8 classes and "not skin / unusable"), asked once from the kiosk
const labelChoices = fetch("/api/label-choices", {cache: "no-store"})
  .then(r => r.ok ? r.json() : []).catch(() => []);
const labelWords = {};
labelChoices.then(cs => { for (const c of cs) labelWords[c.value] = c.text; });

function labelText(label) {
  if (!label) return "not labeled";
  return "labeled " + (labelWords[label.label] || label.label) + " by " + label.by + " at " +
    new Date(label.time).toLocaleString();
}

// the select follows the stored label until the reviewer picks another one (a poll never undoes a choice)
function showLabel(item, label, cropKept) {
  item.labelState.textContent = labelText(label) +
    (cropKept ? "" : " · the crop is no longer on the box (retention limit): it cannot be labeled");
  item.li.dataset.staffLabel = label ? label.label : "";
  item.choice.disabled = item.save.disabled = !cropKept || item.sending;
  if (!item.touched && label && item.choice.querySelector('option[value="' + label.label + '"]')) {
    item.choice.value = label.label;
  }
}

async function sendLabel(ev, item) {
  const value = item.choice.value;
  if (!value) { item.msg.textContent = "Choose a label first."; return; }
  item.sending = item.choice.disabled = item.save.disabled = true;
  let saved = null;
  try {  // who labeled is the logged-in account
    const r = await postWithCsrf("/api/events/" + encodeURIComponent(ev.event_id) + "/label", {
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({label: value})});
    const body = await r.json();
    if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    item.msg.textContent = "";
    saved = body;
  } catch (e) {
    item.msg.textContent = "Label not recorded: " + e.message;
  } finally {
    item.sending = item.choice.disabled = item.save.disabled = false;
  }
  if (saved) {
    item.touched = false;
    item.stored = saved;
    showLabel(item, saved, true);
  }
}

// typical photos of a class (the kiosk's reference_dir), fetched once per class; [] when the feature is off
const referenceCache = {};
function references(label) {
  if (!referenceCache[label]) {
    referenceCache[label] = fetch("/api/reference/" + encodeURIComponent(label))
      .then(r => r.ok ? r.json() : {images: []}).then(b => b.images).catch(() => []);
  }
  return referenceCache[label];
}

function makeEvent(ev) {
  const choice = el("select", {className: "label-choice", title: "what the crop really shows"},
                    el("option", {value: "", textContent: "label the crop…"}));
  const save = el("button", {type: "button", className: "save-label", textContent: "Save label"});
  const labelState = el("div", {className: "label-state note"});
  const item = Object.assign(eventCard(ev, refreshEvents, {extras: [labelState], actions: [choice, save]}),
                             {choice, save, labelState, touched: false, sending: false, stored: ev.staff_label});
  labelChoices.then(cs => {
    for (const c of cs) choice.append(el("option", {value: c.value, textContent: c.text}));
    if (item.stored) choice.value = item.stored.label;
  });
  const refs = el("div", {className: "references"});
  item.info.append(refs);
  references(ev.label).then(urls => {
    if (urls.length) refs.append(el("span", {className: "note", textContent: "typical " + ev.label + ": "}));
    for (const url of urls) refs.append(el("img", {className: "reference", alt: "reference " + ev.label, src: url}));
  });
  choice.addEventListener("change", () => { item.touched = true; });
  save.addEventListener("click", () => sendLabel(ev, item));
  return item;
}

function refreshEvents() {
  return refreshEventList("/api/events", shown, makeEvent, (item, ev) => {
    item.stored = ev.staff_label;
    showLabel(item, ev.staff_label, ev.crop_kept);
  }, "kiosk");
}

async function pollEvents() {
  await refreshEvents();
  setTimeout(pollEvents, 2000);
}

// raised health checks (a stalled camera, a filling outbox), one line each, until they clear
async function pollHealth() {
  const box = document.getElementById("health");
  try {
    const r = await fetch("/healthz", {cache: "no-store"});
    const raised = r.ok ? ((await r.json()).health || []) : [];
    box.replaceChildren(...raised.map(h => el("li", {textContent: h.severity + ": " + h.detail + " (since " + h.since + ")"})));
    box.hidden = raised.length === 0;
  } catch (e) { /* the events list already says when the kiosk cannot be reached */ }
  setTimeout(pollHealth, 5000);
}

startCameras();
pollEvents();
pollHealth();
