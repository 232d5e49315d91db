"use strict";
const $ = id => document.getElementById(id);

async function showReferences(label) {
  const box = $("references");
  box.replaceChildren();
  box.hidden = true;
  try {
    const r = await fetch("/api/reference/" + encodeURIComponent(label));
    const urls = r.ok ? (await r.json()).images : [];
    if (!urls.length) return;  // no reference_dir, or no photos of this class
    const note = document.createElement("div");
    note.className = "note";
    note.textContent = "Typical " + label + " photos, for comparison:";
    box.append(note);
    for (const url of urls) {
      const img = document.createElement("img");
      img.className = "reference"; img.alt = "reference " + label; img.src = url;
      box.append(img);
    }
    box.hidden = false;
  } catch (e) { /* the answer stands without them */ }
}

function showError(msg) { $("error").textContent = msg; $("error").hidden = false; }

async function diagnose(blob, name) {
  $("error").hidden = true; $("result").hidden = true; $("gradcam").hidden = true; $("busy").hidden = false;
  $("references").hidden = true;
  const form = new FormData();
  form.append("image", blob, name);
  try {
    const r = await postWithCsrf("/api/diagnose", {body: form});  // the login session, not the machine token
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON: a proxy's error page */ }
    if (!r.ok) {
      const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
                                         : "HTTP " + r.status;
      showError((r.status === 403 ? "Your account may not upload: " : "Not analysed: ") + detail);
      return;
    }
    $("decision").textContent = stateWords(body.decision);
    $("decision").className = "badge " + body.decision;
    // an unfamiliar photo's label is the model's guess, not its answer: say so
    $("label").textContent = (body.reason === "unfamiliar" ? "model's guess: " : "") + body.label;
    $("probability").textContent = (100 * body.probability).toFixed(1) + " %";
    $("reason").textContent = body.reason ? reasonWords(body.reason) + (body.detail ? " (" + body.detail + ")" : "") : "";
    $("reason").hidden = !body.reason;
    $("result").hidden = false;
    showReferences(body.label);
    if (body.gradcam_png_base64) {
      $("gradcam").src = "data:image/png;base64," + body.gradcam_png_base64;
      $("gradcam").hidden = false;
    }
  } catch (e) {
    showError("Cannot reach the kiosk: " + e.message);
  } finally {
    $("busy").hidden = true;
  }
}

$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (f) diagnose(f, f.name);
});

let stream = null;
$("use-camera").addEventListener("click", async () => {
  // browsers give the camera only to https:// or localhost pages; the file input still opens it on phones
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("The camera needs an https:// page here; use the Photo field, which opens the camera on phones.");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {facingMode: "environment"}, audio: false});
  } catch (e) {
    showError("No camera: " + e.message);
    return;
  }
  $("video").srcObject = stream;
  await $("video").play();
  $("camera-box").hidden = false;
});

$("snap").addEventListener("click", () => {
  const v = $("video");
  if (!v.videoWidth) { showError("The camera has no picture yet."); return; }
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  c.toBlob(blob => diagnose(blob, "camera.jpg"), "image/jpeg", 0.92);
});
