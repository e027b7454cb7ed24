// fgvc serve's page: POST the chosen photo to /predict (top-5) and /explain (Grad-CAM).
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let current = 0; // the latest photo: answers for an older one are dropped

function setState(state) {
  document.body.dataset.state = state;
}

function showError(message) {
  const error = $("error");
  error.textContent = message;
  error.hidden = !message;
}

async function errorLine(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

async function loadInfo() {
  try {
    const response = await fetch("/info");
    info = (await response.json()).model;
    $("model-name").textContent = info.name;
    $("model-details").textContent = `${info.model}; ${info.preprocessing}; ${info.backend}`;
    $("results-heading").textContent = `Top ${Math.min(info.top_k, info.num_classes)}`;
    if (!info.explain) $("explain-section").hidden = true;
  } catch (err) {
    $("model-details").textContent = `cannot read /info: ${err}`;
  }
  try {
    const response = await fetch("/health");
    $("health").textContent = response.ok ? "ready" : "not ready (the model is loading)";
  } catch (err) {
    $("health").textContent = `unreachable (${err})`;
  }
}

function percent(p) {
  return `${(100 * p).toFixed(p >= 0.001 ? 1 : 3)}%`;
}

function showPredictions(predictions) {
  const list = $("predictions");
  list.replaceChildren();
  for (const entry of predictions) {
    const item = document.createElement("li");
    item.dataset.className = entry.class_name;
    item.dataset.probability = String(entry.probability);
    const name = document.createElement("span");
    name.className = "class-name";
    name.textContent = entry.class_name;
    const value = document.createElement("span");
    value.className = "probability";
    value.textContent = percent(entry.probability);
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = 1;
    meter.value = entry.probability;
    meter.setAttribute("aria-label", `${entry.class_name}: ${percent(entry.probability)}`);
    item.append(name, value, document.createElement("br"), meter);
    list.append(item);
  }
}

function showExplanation(result) {
  const caption = `${result.class_name} (p = ${result.probability.toFixed(3)}), ${result.method}`;
  $("explain-caption").textContent = caption;
  const crop = $("crop");
  crop.src = `data:image/png;base64,${result.crop}`;
  crop.alt = "The center crop of the photo that the network classified";
  crop.hidden = false;
  const overlay = $("overlay");
  overlay.src = `data:image/png;base64,${result.overlay}`;
  overlay.alt = `Grad-CAM heat map for ${caption}: red where the evidence is strongest`;
  overlay.hidden = false;
}

function clearResults() {
  $("predictions").replaceChildren();
  $("explain-caption").textContent = "";
  for (const id of ["crop", "overlay"]) {
    $(id).hidden = true;
    $(id).removeAttribute("src");
  }
}

async function post(path, file) {
  const form = new FormData();
  form.append("image", file, file.name || "photo");
  const response = await fetch(path, { method: "POST", body: form });
  if (!response.ok) throw new Error(await errorLine(response));
  return response.json();
}

async function classify(file) {
  if (!file) return;
  const mine = ++current;
  showError("");
  clearResults();
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("preview-caption").textContent = file.name || "";
  $("preview-figure").hidden = false;
  setState("predicting");
  $("busy").textContent = "Classifying\u2026";
  const explain = info && info.explain ? post("/explain", file) : null;
  try {
    const result = await post(`/predict?top_k=${(info && info.top_k) || 5}`, file);
    if (mine !== current) return;
    showPredictions(result.predictions);
    if (explain) {
      setState("explaining");
      $("busy").textContent = "Computing the heat map\u2026";
      const explanation = await explain;
      if (mine !== current) return;
      showExplanation(explanation);
    }
    $("busy").textContent = "";
    setState("done");
  } catch (err) {
    if (mine !== current) return;
    $("busy").textContent = "";
    $("preview-figure").hidden = true; // the browser could not show it either
    showError(err.message);
    setState("error");
  }
  if (explain) explain.catch(() => {}); // its error, if any, was shown or is stale
}

function setUp() {
  const input = $("image-input");
  input.addEventListener("change", () => classify(input.files[0]));
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) classify(file);
  });
  setState("idle");
  loadInfo();
}

setUp();
