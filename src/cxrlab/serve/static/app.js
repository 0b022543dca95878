// cxrlab serve: the page. Plain JS, no build step; every server or file string goes in via textContent.
"use strict";

const state = { token: null, info: null, card: null, results: [] };

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const fmt = (v, d = 3) => (v === null || v === undefined || Number.isNaN(v) ? "n/a" : Number(v).toFixed(d));
const ci = (m, key = "auc") => (m && m[key] !== null && m[key] !== undefined
  ? `${fmt(m[key])} (${fmt(m.ci_low)}–${fmt(m.ci_high)})` : "n/a");

function setStatus(text, isError = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

function readToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("cxrlab-token", hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  state.token = sessionStorage.getItem("cxrlab-token");
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  const res = await fetch(path, { ...options, headers });
  if (res.status === 401) {
    $("#token-form").hidden = false;
    $("#token").focus();
    throw new Error("this server needs an access token");
  }
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      if (typeof body.detail === "string") detail = body.detail;
      else if (Array.isArray(body.detail)) detail = body.detail.map((d) => d.msg).join("; ");
    } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return res;
}

// ---- model card --------------------------------------------------------------------------
function table(header, rows) {
  const t = el("table");
  t.append(el("thead", {}, el("tr", {}, ...header.map((h) => el("th", { scope: "col", text: h })))));
  const body = el("tbody");
  for (const r of rows) body.append(el("tr", {}, ...r.map((c, i) => el(i ? "td" : "th", i ? { text: c } : { scope: "row", text: c }))));
  t.append(body);
  return t;
}

// The patients shared between splits, as the run report's leakage box shows them (serving.patient_overlap).
function overlapNote(overlap) {
  if (overlap === null || overlap === undefined) {
    return el("p", { class: "small leak-unknown", text: "Patient overlap between splits: not recorded for this run." });
  }
  const pairs = Object.entries(overlap);
  if (!pairs.length) return el("p", { class: "small leak-ok", text: "No patient is in two splits." });
  const box = el("div", { class: "leak", role: "note" });
  box.append(el("strong", { text: "⚠ Patients shared between splits" }));
  box.append(el("ul", {}, ...pairs.map(([pair, v]) => el("li", {
    text: `${pair.replace("-", " and ")}: ${v.patients} patient${v.patients === 1 ? "" : "s"}`
      + (v.examples.length ? ` (e.g. ${v.examples.join(", ")})` : "") }))));
  if (pairs.some(([pair]) => pair.includes("test"))) {
    box.append(el("p", { text: "Images of these patients were both trained and tested on, so the test metrics below are likely optimistic." }));
  }
  return box;
}

function renderCard(card) {
  const box = $("#card");
  box.replaceChildren();
  box.append(el("p", { text: card.description }));
  box.append(el("p", { class: "small", text: `version ${card.version}` }));
  box.append(el("h3", { text: "Intended use" }), el("p", { text: card.intended_use }));
  box.append(el("h3", { text: "Limitations" }), el("ul", {}, ...card.limitations.map((x) => el("li", { text: x }))));
  const d = card.data, n = d.split.n_images;
  box.append(el("h3", { text: "Training data and split" }), el("ul", {},
    el("li", { text: `source ${d.source}; labels ${card.labels.join(", ")}` }),
    el("li", { text: `train ${n.train}, validation ${n.val}, test ${n.test} images (split hash ${d.split.hash})` }),
    el("li", { text: d.split.rule })));
  box.append(overlapNote(state.info ? state.info.patient_overlap : null));
  const m = card.metrics;
  box.append(el("h3", { text: "Test metrics (95% CI)" }));
  if (!m) box.append(el("p", { text: "not evaluated yet" }));
  else if (card.task === "multiclass") {
    box.append(el("p", { text: `n = ${m.n}; accuracy ${ci(m.accuracy, "value")}` }));
    box.append(table(["class", "precision", "recall", "F1"], Object.entries(m.per_class).map(([k, v]) => [k, fmt(v.precision), fmt(v.recall), fmt(v.f1)])));
  } else {
    const auc = card.task === "binary" ? `AUC ${ci(Object.values(m.per_label)[0])}` : `macro AUC ${ci(m.macro_auc)}`;
    box.append(el("p", { text: `n = ${m.n}, ${m.n_boot} bootstrap resamples of ${m.resampling}; ${auc}` }));
    box.append(table(["label", "AUC (95% CI)", "threshold"], Object.entries(m.per_label).map(([k, v]) => [k, ci(v), fmt(v.threshold)])));
  }
  box.append(el("p", { class: "small", text: `Thresholds: ${card.threshold_rule}` }));
  const pre = card.network_data_format.inputs.image.preprocess;
  // the steps applied, in order, as the run report says them (serving.preprocessing); else the raw record
  const steps = state.info && state.info.preprocessing;
  box.append(el("h3", { text: "Preprocessing" }), el("p", {
    text: steps || `${pre.size} × ${pre.size} px, ${pre.resize}, CLAHE ${pre.clahe ? "on" : "off"}` }));
  box.append(el("h3", { text: "Out-of-distribution warning" }), el("p", { text: card.ood
    ? `Mahalanobis distance of penultimate features (${card.ood.n_train} training images); flagged beyond the ${card.ood.percentile}th percentile of validation (${fmt(card.ood.threshold, 2)}).`
    : "No out-of-distribution summary for this run." }));
  if (card.ood && card.ood.note) box.append(el("p", { class: "leak", text: `⚠ ${card.ood.note}` }));  // e.g. failed self-test
  const v = card.library_versions || {};
  box.append(el("h3", { text: "Library versions" }), el("p", { class: "small", text: Object.entries(v).map(([k, x]) => `${k} ${x}`).join(", ") }));
}

async function loadModel() {
  const res = await api("/model");
  const card = await res.json();
  state.card = card;
  state.info = card.serving;
  $("#model-name").textContent = card.name;
  $("#model-meta").textContent = `${card.architecture.name} · ${card.task} · ${card.labels.length === 1 ? card.labels[0] : `${card.labels.length} labels`} · ${state.info.input_size} px · engine ${state.info.engine}`;
  document.title = `cxrlab serve: ${card.name}`;
  const method = $("#method");
  method.replaceChildren(...state.info.explain_methods.map((x) => el("option", { value: x, text: x })));
  $("#mc-option").hidden = !state.info.mc_dropout;
  const lim = state.info.limits;
  $("#limits-hint").textContent = `Up to ${lim.max_files} files of at most ${lim.max_file_mb} MiB each. Images are checked by content and decoded in a temporary folder that is removed after each request; nothing is kept.`;
  renderCard(card);
}

// ---- results -----------------------------------------------------------------------------
function probRow(label, p, thr, sd) {
  const positive = thr !== null && thr !== undefined && p >= thr;
  const li = el("li", { class: positive ? "positive" : "" });
  const bar = el("div", { class: "bar", "aria-hidden": "true" }, el("div", { class: "fill", style: `width:${(100 * p).toFixed(1)}%` }));
  if (thr !== null && thr !== undefined) bar.append(el("div", { class: "thr", style: `left:calc(${(100 * thr).toFixed(1)}% - 1px)`, title: `threshold ${fmt(thr)}` }));
  const value = el("span", { class: "value", text: fmt(p) });
  if (sd !== undefined) value.append(el("span", { class: "sd", text: `± ${fmt(sd)}` }));
  li.append(el("span", { class: "name", text: label, title: label }), bar, value);
  const thrText = thr !== null && thr !== undefined ? `, threshold ${fmt(thr)}, ${positive ? "positive" : "negative"}` : "";
  li.setAttribute("aria-label", `${label}: probability ${fmt(p)}${thrText}`);
  return li;
}

async function explain(entry) {
  const { file, node } = entry;
  const label = $(".label-picker", node).value;
  const method = $("#method").value || "gradcam";
  const img = $(".cam", node), cap = $(".cam-caption", node);
  cap.textContent = `computing ${method} for ${label}…`;
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const res = await api(`/explain?label=${encodeURIComponent(label)}&method=${encodeURIComponent(method)}`, { method: "POST", body: form });
    const blob = await res.blob();
    if (entry.url) URL.revokeObjectURL(entry.url);
    entry.url = URL.createObjectURL(blob);
    img.src = entry.url;
    img.alt = `${method} overlay for ${label} on ${file.name}`;
    const p = fmt(Number(res.headers.get("X-Probability")));
    cap.textContent = res.headers.get("X-Map-Flat") === "1"
      ? `${method} for ${label} (p = ${p}): the map is flat; the model gives no location for this label.`
      : `${method} for ${label} (p = ${p}): warm colours show where the model looked.`;
  } catch (e) {
    cap.textContent = `no overlay: ${e.message}`;
  }
}

function renderResult(file, r, data) {
  const node = $("#result-template").content.firstElementChild.cloneNode(true);
  $(".file", node).textContent = r.file;
  const thr = state.info.thresholds || {};
  const sorted = data.labels.slice().sort((a, b) => r.probabilities[b] - r.probabilities[a]);
  if (r.ood) {
    const flag = $(".ood", node);
    if (r.ood.flag) {
      flag.hidden = false;
      flag.textContent = `⚠ Unlike the training images (OOD score ${fmt(r.ood.score, 1)} > threshold ${fmt(r.ood.threshold, 1)}). `
        + "It may not be a chest radiograph of the kind this model was trained on: treat these probabilities with caution.";
    }
  }
  const dec = $(".decision", node);
  if (data.task === "multiclass") dec.append("Predicted class: ", el("strong", { text: r.prediction }));
  else if (data.task === "binary") {
    // one label: its absence is the other class, said as such (not "no label reaches its threshold")
    dec.append("At the validation threshold: ", r.positive.length ? el("strong", { text: r.positive[0] })
      : el("strong", { class: "negative", text: `Normal (no ${data.labels[0]})` }));
  } else if (r.positive.length) dec.append("At the validation thresholds: ", el("strong", { text: r.positive.join(", ") }));
  else dec.append("No label reaches its threshold.");
  if (r.ood && !r.ood.flag) dec.append(el("span", { class: "small", text: `  (OOD score ${fmt(r.ood.score, 1)}, threshold ${fmt(r.ood.threshold, 1)}: in range)` }));
  const list = $(".probs", node);
  for (const lab of data.labels) {
    list.append(probRow(lab, r.probabilities[lab], data.task === "multiclass" ? null : thr[lab],
      r.mc_dropout ? r.mc_dropout.std[lab] : undefined));
  }
  const picker = $(".label-picker", node);
  picker.replaceChildren(...sorted.map((lab) => el("option", { value: lab, text: `${lab} (${fmt(r.probabilities[lab], 2)})` })));
  const entry = { file, node, url: null };
  picker.addEventListener("change", () => explain(entry));
  return entry;
}

async function handleFiles(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length || !state.info) return;
  const lim = state.info.limits;
  if (files.length > lim.max_files) {
    setStatus(`${files.length} files: at most ${lim.max_files} at once`, true);
    return;
  }
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const mc = $("#mc").checked && !$("#mc-option").hidden ? "?mc_passes=25" : "";
  setStatus(`predicting ${files.length} image${files.length > 1 ? "s" : ""}…`);
  try {
    const data = await (await api(`/predict${mc}`, { method: "POST", body: form })).json();
    for (const e of state.results) if (e.url) URL.revokeObjectURL(e.url);
    const box = $("#results");
    box.replaceChildren();
    state.results = data.results.map((r, i) => renderResult(files[i], r, data));
    box.append(...state.results.map((e) => e.node));
    const flagged = data.results.filter((r) => r.ood && r.ood.flag).length;
    setStatus(`${data.results.length} result${data.results.length > 1 ? "s" : ""} (engine ${data.engine})`
      + (flagged ? `; ${flagged} flagged as unlike the training images` : ""));
    for (const e of state.results) await explain(e);
  } catch (e) {
    setStatus(`error: ${e.message}`, true);
  }
}

function wireUpload() {
  const drop = $("#drop"), input = $("#files");
  $("#pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => { handleFiles(input.files); input.value = ""; });
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); handleFiles(e.dataTransfer.files); });
  $("#method").addEventListener("change", async () => { for (const e of state.results) await explain(e); });
  $("#token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    state.token = $("#token").value;
    sessionStorage.setItem("cxrlab-token", state.token);
    $("#token-form").hidden = true;
    start();
  });
}

async function start() {
  try {
    await loadModel();
    setStatus("ready: choose or drop images");
  } catch (e) {
    setStatus(`error: ${e.message}`, true);
  }
}

readToken();
wireUpload();
start();
