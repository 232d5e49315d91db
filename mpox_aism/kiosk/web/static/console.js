"use strict";
// The console's queue: every station's events, filtered by station and state, with each station's health.
// Everything from the server goes in with textContent / src only (session.js's el), never innerHTML.

const shown = new Map();  // event_id -> {li, state, history, msg, buttons}
const stationOptions = new Set();

function filters() {
  const q = new URLSearchParams();
  const station = document.getElementById("filter-station").value;
  const state = document.getElementById("filter-state").value;
  if (station) q.set("station", station);
  if (state) q.set("state", state);
  return q.toString();
}

function makeEvent(ev) {
  const item = eventCard(ev, refreshEvents,
                         {headline: [el("strong", {className: "station", textContent: ev.station_id}), " "]});
  item.li.dataset.station = ev.station_id;
  return item;
}

function refreshEvents() {
  return refreshEventList("/api/events?" + filters(), shown, makeEvent, () => {}, "console");
}

const SEVERITY_RANK = {critical: 0, warning: 1, notice: 2};  // each station's are already in this order

function banner(b) {  // shown while its cause lasts: the server drops it once cleared
  const p = el("p", {className: "banner " + b.severity + (b.severity === "notice" ? " note" : " error"),
                     textContent: b.text});
  p.dataset.station = b.station_id;
  p.dataset.kind = b.kind;
  p.dataset.subject = b.subject || "";
  p.dataset.severity = b.severity;
  return p;
}

function availability(s) {
  if (s.online === null) return "availability unknown";
  return (s.online ? "online" : "offline") + (s.since ? " since " + new Date(s.since).toLocaleString() : "");
}

async function refreshStations() {
  const errBox = document.getElementById("stations-error");
  try {
    const r = await fetch("/api/stations", {cache: "no-store"});
    if (r.status === 401) { location.href = "/login"; return; }
    if (!r.ok) throw new Error("HTTP " + r.status);
    const stations = await r.json();
    const list = document.getElementById("stations");
    const banners = document.getElementById("banners");
    list.replaceChildren(...stations.map(s => {
      const li = el("li", {className: "station " + (s.online === false ? "offline" : "online")},
        el("strong", {textContent: s.station_id}), " ", el("span", {className: "availability", textContent:
          availability(s)}), " · " + s.events + " event(s)");
      li.dataset.station = s.station_id;
      for (const c of s.cameras) {
        li.append(el("div", {className: "camera-state note", textContent: "camera " + c.name + ": " + c.state +
                             (c.last_error ? " (" + c.last_error + ")" : "")}));
      }
      return li;
    }));
    banners.replaceChildren(...stations.flatMap(s => s.banners)
      .sort((a, b) => SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]).map(banner));
    const select = document.getElementById("filter-station");
    for (const s of stations) {
      if (stationOptions.has(s.station_id)) continue;
      stationOptions.add(s.station_id);
      select.append(el("option", {value: s.station_id, textContent: s.station_id}));
    }
    errBox.hidden = true;
  } catch (e) {
    errBox.textContent = "Cannot reach the console: " + e.message;
    errBox.hidden = false;
  }
}

async function poll() {
  await Promise.all([refreshStations(), refreshEvents()]);
  setTimeout(poll, 2000);
}

document.getElementById("filter-station").addEventListener("change", refreshEvents);
document.getElementById("filter-state").addEventListener("change", refreshEvents);
poll();
