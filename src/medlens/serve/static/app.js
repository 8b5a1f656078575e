// medlens serve: the page's script. Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const API = "/api/v1";
const WINDOW_NAMES = { lung: "Lung", soft_tissue: "Soft tissue", bone: "Bone" };
const OUTLINE_COLOUR = "#ffd600";
const DISPLAY_SIDE = 560; // canvas pixels of the longest image side, at most

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("medlens-token") || "",
  bundles: [],
  result: null,
  view: null, // decoded arrays: {image, heat, mask, depth, height, width, rgb, ct, ...}
  slice: 0,
  window: "lung",
};

// ------------------------------------------------------------------------------------------------ HTTP
function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

// ------------------------------------------------------------------------------------------------ messages
function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

// ------------------------------------------------------------------------------------------------ bundles
function currentBundle() {
  return state.bundles.find((b) => b.name === $("bundle").value) || null;
}

function describe(bundle) {
  if (!bundle) return "";
  const reads = bundle.input.reads.join(", ");
  if (bundle.kind === "segmenter") {
    return `Segmentation (${bundle.input.dims}D, ${bundle.input.modality}); reads ${reads}.`;
  }
  const what = bundle.input.dims === 3 ? "Lesion classifier for CT volumes" : "Image classifier";
  const threshold = bundle.labels.length === 2
    ? ` Decision: p(${bundle.labels[1]}) ≥ ${bundle.threshold.toFixed(2)}.` : "";
  return `${what}: ${bundle.labels.join(" / ")}.${threshold} Reads ${reads}.`
    + (bundle.explain ? " Grad-CAM available." : "");
}

async function loadBundles() {
  try {
    state.bundles = await call(`${API}/bundles`);
  } catch (error) {
    if (error.status === 401) {
      $("token-form").hidden = false;
      showError(state.token ? "The access token was not accepted." : "This server needs an access token.");
      $("token").focus();
      return;
    }
    showError(`Could not list the models: ${error.message}`);
    return;
  }
  $("token-form").hidden = !state.token;
  showError("");
  setStatus(state.bundles.length ? "" : "This server has no model loaded.");
  const select = $("bundle");
  select.replaceChildren(...state.bundles.map((b) => {
    const option = document.createElement("option");
    option.value = b.name;
    option.textContent = `${b.name} — ${b.title}`;
    return option;
  }));
  const remembered = sessionStorage.getItem("medlens-bundle");
  if (remembered && state.bundles.some((b) => b.name === remembered)) select.value = remembered;
  for (const id of ["bundle", "card-button", "choose"]) $(id).disabled = state.bundles.length === 0;
  bundleChanged();
}

function bundleChanged() {
  const bundle = currentBundle();
  $("bundle-summary").textContent = describe(bundle);
  if (bundle) sessionStorage.setItem("medlens-bundle", bundle.name);
}

async function showCard() {
  const bundle = currentBundle();
  if (!bundle) return;
  try {
    const details = await call(`${API}/bundles/${encodeURIComponent(bundle.name)}`);
    $("card-body").innerHTML = details.card.html; // rendered by the server from Markdown, raw HTML disabled
    $("card-title").textContent = `Model card: ${bundle.name}`;
    $("card-dialog").showModal();
    $("card-close").focus();
  } catch (error) {
    showError(`Could not load the model card: ${error.message}`);
  }
}

// ------------------------------------------------------------------------------------------------ upload
async function filesFromDrop(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry())
    .filter(Boolean);
  if (!entries.some((entry) => entry.isDirectory)) return [...dataTransfer.files];
  const files = [];
  async function walk(entry) {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return files.filter((f) => !f.name.startsWith("."));
}

async function send(files) {
  const bundle = currentBundle();
  if (!bundle || files.length === 0) return;
  showError("");
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  const query = new URLSearchParams({ view: "true", outline: "true", explain: String(bundle.explain) });
  const label = files.length === 1 ? files[0].name : `${files.length} files`;
  setStatus(`Sending ${label} to ${bundle.name}…`);
  document.body.dataset.state = "busy";
  const started = performance.now();
  try {
    const result = await call(`${API}/bundles/${encodeURIComponent(bundle.name)}/predict?${query}`,
      { method: "POST", body: form });
    state.result = result;
    state.view = result.view ? await decodeView(result.view) : null;
    state.slice = startSlice(result);
    state.window = (result.view && result.view.window) || "lung";
    renderResults(result);
    setupViewer();
    draw();
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(`${label}: answered in ${seconds} s.`);
    document.body.dataset.state = "done";
  } catch (error) {
    const status = error.status ? ` (HTTP ${error.status})` : "";
    showError(`The file was refused${status}: ${error.message}`);
    setStatus("");
    clearResult(`No result: ${label} was refused.`);
    document.body.dataset.state = "error";
  }
}

function clearResult(message) {
  // a refused file must not leave the previous answer on screen as if it were its own
  state.result = null;
  state.view = null;
  $("results").replaceChildren(element("p", { class: "hint" }, message));
  $("stage").classList.add("empty");
  for (const id of ["slice-row", "window-row", "overlay-row"]) $(id).hidden = true;
  $("canvas").setAttribute("aria-label", "No image");
}

// ------------------------------------------------------------------------------------------------ arrays
async function inflate(packed) {
  const text = atob(packed.data);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  const buffer = await new Response(stream).arrayBuffer();
  const data = packed.dtype === "int16" ? new Int16Array(buffer) : new Uint8Array(buffer);
  return { data, shape: packed.shape };
}

async function decodeView(view) {
  const image = await inflate(view.image);
  const [depth, height, width] = image.shape;
  return {
    kind: view.kind,
    ct: view.image.dtype === "int16",
    rgb: image.shape.length === 4,
    depth, height, width,
    spacing: view.spacing,
    image: image.data,
    heat: view.heat ? await inflate(view.heat) : null,
    mask: view.mask ? await inflate(view.mask) : null,
    maskLabels: view.mask_labels || {},
    windows: view.windows || {},
  };
}

function startSlice(result) {
  const images = result.images || [];
  const first = images.find((entry) => entry.slice !== undefined);
  if (first) return first.slice;
  if (!result.view || result.view.kind !== "volume") return 0;
  return Math.floor(result.view.image.shape[0] / 2);
}

// ------------------------------------------------------------------------------------------------ viewer
function setupViewer() {
  const view = state.view;
  $("stage").classList.toggle("empty", !view);
  if (!view) return;
  const slider = $("slice");
  slider.max = String(view.depth - 1);
  slider.value = String(state.slice);
  $("slice-row").hidden = view.depth < 2;
  const windows = $("windows");
  windows.replaceChildren();
  $("window-row").hidden = !view.ct;
  if (view.ct) {
    for (const name of Object.keys(view.windows)) {
      const w = view.windows[name];
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "window";
      input.value = name;
      input.checked = name === state.window;
      input.addEventListener("change", () => { state.window = name; draw(); });
      label.append(input, ` ${WINDOW_NAMES[name] || name} (L ${w.center}, W ${w.width})`);
      windows.append(label);
    }
  }
  $("overlay-row").hidden = !view.heat && !view.mask;
  $("show-heat").disabled = !view.heat;
  $("show-heat").parentElement.hidden = !view.heat;
  $("show-outline").disabled = !view.mask;
  $("show-outline").parentElement.hidden = !view.mask;
  updateSliceLabel();
}

function updateSliceLabel() {
  const view = state.view;
  if (!view) return;
  const noun = view.kind === "volume" ? "Slice" : "Image";
  $("slice-label").textContent = `${noun} ${state.slice + 1} of ${view.depth}`;
  $("slice").setAttribute("aria-valuetext", `${noun} ${state.slice + 1} of ${view.depth}`);
}

function jet(t) {
  const clamp = (v) => Math.max(0, Math.min(1, v));
  return [clamp(1.5 - Math.abs(4 * t - 3)), clamp(1.5 - Math.abs(4 * t - 2)), clamp(1.5 - Math.abs(4 * t - 1))];
}

function baseLayer(view, z) {
  const { width, height } = view;
  const pixels = new ImageData(width, height);
  const out = pixels.data;
  const plane = width * height;
  if (view.ct) {
    const w = view.windows[state.window] || { center: 40, width: 400 };
    const low = w.center - w.width / 2;
    const scale = 255 / w.width;
    const values = view.image;
    for (let i = 0; i < plane; i += 1) {
      const g = Math.max(0, Math.min(255, (values[z * plane + i] - low) * scale));
      out[4 * i] = g; out[4 * i + 1] = g; out[4 * i + 2] = g; out[4 * i + 3] = 255;
    }
  } else if (view.rgb) {
    const values = view.image;
    for (let i = 0; i < plane; i += 1) {
      const j = 3 * (z * plane + i);
      out[4 * i] = values[j]; out[4 * i + 1] = values[j + 1]; out[4 * i + 2] = values[j + 2]; out[4 * i + 3] = 255;
    }
  } else {
    const values = view.image;
    for (let i = 0; i < plane; i += 1) {
      const g = values[z * plane + i];
      out[4 * i] = g; out[4 * i + 1] = g; out[4 * i + 2] = g; out[4 * i + 3] = 255;
    }
  }
  const layer = document.createElement("canvas");
  layer.width = width;
  layer.height = height;
  layer.getContext("2d").putImageData(pixels, 0, 0);
  return layer;
}

function heatLayer(heat, z) {
  const [, h, w] = heat.shape;
  const pixels = new ImageData(w, h);
  const out = pixels.data;
  for (let i = 0; i < w * h; i += 1) {
    const t = heat.data[z * w * h + i] / 255;
    const [r, g, b] = jet(t);
    out[4 * i] = 255 * r; out[4 * i + 1] = 255 * g; out[4 * i + 2] = 255 * b;
    out[4 * i + 3] = 255 * 0.6 * t; // unimportant regions stay clear, the image shows through
  }
  const layer = document.createElement("canvas");
  layer.width = w;
  layer.height = h;
  layer.getContext("2d").putImageData(pixels, 0, 0);
  return layer;
}

function drawOutline(ctx, mask, z, scaleX, scaleY) {
  // the borders between pixels of different labels, drawn along the pixel edges
  const [, h, w] = mask.shape;
  const m = mask.data;
  const at = (y, x) => (y < 0 || x < 0 || y >= h || x >= w ? 0 : m[z * w * h + y * w + x]);
  ctx.beginPath();
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) {
      const v = at(y, x);
      if (v === 0) continue;
      if (at(y - 1, x) !== v) { ctx.moveTo(x * scaleX, y * scaleY); ctx.lineTo((x + 1) * scaleX, y * scaleY); }
      if (at(y + 1, x) !== v) { ctx.moveTo(x * scaleX, (y + 1) * scaleY); ctx.lineTo((x + 1) * scaleX, (y + 1) * scaleY); }
      if (at(y, x - 1) !== v) { ctx.moveTo(x * scaleX, y * scaleY); ctx.lineTo(x * scaleX, (y + 1) * scaleY); }
      if (at(y, x + 1) !== v) { ctx.moveTo((x + 1) * scaleX, y * scaleY); ctx.lineTo((x + 1) * scaleX, (y + 1) * scaleY); }
    }
  }
  ctx.strokeStyle = OUTLINE_COLOUR;
  ctx.lineWidth = 2;
  ctx.stroke();
}

function draw() {
  const view = state.view;
  if (!view) return;
  const z = Math.max(0, Math.min(view.depth - 1, state.slice));
  const aspect = (view.spacing[1] * view.height) / (view.spacing[2] * view.width);
  const zoom = Math.max(1, Math.floor(DISPLAY_SIDE / Math.max(view.width, view.height / aspect)));
  const canvas = $("canvas");
  canvas.width = view.width * zoom;
  canvas.height = Math.round(view.width * zoom * aspect);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = zoom < 2; // small images are shown as their pixels, not blurred
  ctx.drawImage(baseLayer(view, z), 0, 0, canvas.width, canvas.height);
  const shown = [];
  if (view.heat && $("show-heat").checked) {
    ctx.imageSmoothingEnabled = true; // the map is upsampled smoothly, as Grad-CAM's own interpolation
    ctx.drawImage(heatLayer(view.heat, z), 0, 0, canvas.width, canvas.height);
    shown.push("Grad-CAM heat map");
  }
  if (view.mask && $("show-outline").checked) {
    drawOutline(ctx, view.mask, z, canvas.width / view.mask.shape[2], canvas.height / view.mask.shape[1]);
    shown.push("segmentation outline");
  }
  const where = view.depth > 1 ? `, ${view.kind === "volume" ? "slice" : "image"} ${z + 1} of ${view.depth}` : "";
  const windowText = view.ct ? `, ${WINDOW_NAMES[state.window] || state.window} window` : "";
  canvas.setAttribute("aria-label", `${state.result.file}${where}${windowText}`
    + (shown.length ? `, showing ${shown.join(" and ")}` : ""));
  canvas.dataset.overlays = shown.join(",");
  updateSliceLabel();
}

// ------------------------------------------------------------------------------------------------ results
function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function percent(p) {
  return `${(100 * p).toFixed(1)} %`;
}

function classifierRow(result, row, index) {
  const images = (result.images || [])[index] || {};
  const title = row.roi ? `Lesion ${index + 1}` : (result.rows.length > 1 ? `Image ${index + 1}` : result.file);
  const card = element("article", { class: "result", "aria-label": `${title}: ${row.label}` });
  card.append(element("h3", {}, title));
  if (row.roi) card.append(element("p", { class: "roi" }, row.roi));
  card.append(element("p", { class: "label", "data-testid": "label" }, row.label));
  for (const name of result.labels) {
    const p = row[`p_${name}`];
    const line = element("div", { class: `prob${name === row.label ? " chosen" : ""}` });
    const id = `p-${index}-${result.labels.indexOf(name)}`;
    line.append(element("span", { class: "name", id }, `p(${name})`),
      element("meter", { min: "0", max: "1", value: String(p), "aria-labelledby": id }),
      element("span", { class: "value" }, percent(p)));
    card.append(line);
  }
  if (result.labels.length === 2) {
    card.append(element("p", { class: "threshold" },
      `Threshold ${row.threshold.toFixed(2)}: p(${result.labels[1]}) ≥ ${row.threshold.toFixed(2)} → `
      + `${result.labels[1]}, otherwise ${result.labels[0]}.`));
  }
  if (images.slice !== undefined && state.view && state.view.depth > 1) {
    const go = element("button", { type: "button", class: "secondary" }, `Show slice ${images.slice + 1}`);
    go.addEventListener("click", () => { state.slice = images.slice; $("slice").value = String(images.slice); draw(); });
    card.append(go);
  }
  if (images.gradcam) {
    card.append(element("figure", {},
      element("img", { src: images.gradcam, alt: `Grad-CAM overlay of ${title}: where the model looked for ${row.label}` }),
      element("figcaption", {}, "Grad-CAM on the model's input (red: most important)")));
  }
  if (images.outline) {
    card.append(element("figure", {},
      element("img", { src: images.outline, alt: `Outline of ${title} on slice ${images.slice + 1}` }),
      element("figcaption", {}, `Lesion outline, slice ${images.slice + 1}`)));
  }
  return card;
}

function segmenterResult(result) {
  const card = element("article", { class: "result", "aria-label": `Segmentation of ${result.file}` });
  card.append(element("h3", {}, result.file));
  const measure = result.rows.length && "volume_mm3" in result.rows[0] ? "volume_mm3" : "area_mm2";
  const unit = measure === "volume_mm3" ? "Volume (mm³)" : "Area (mm²)";
  const table = element("table", { class: "classes" },
    element("thead", {}, element("tr", {}, element("th", { scope: "col" }, "Class"),
      element("th", { scope: "col" }, "Pixels"), element("th", { scope: "col" }, unit))));
  const body = element("tbody");
  for (const row of result.rows) {
    body.append(element("tr", {}, element("th", { scope: "row", "data-testid": "label" }, row.label),
      element("td", { class: "num" }, String(row.voxels)), element("td", { class: "num" }, row[measure].toFixed(1))));
  }
  table.append(body);
  card.append(table);
  if (result.instances !== undefined) card.append(element("p", {}, `${result.instances} objects`));
  const outline = (result.images || [])[0];
  if (outline && outline.outline) {
    card.append(element("figure", {},
      element("img", { src: outline.outline, alt: `Segmentation outline of ${result.file}` }),
      element("figcaption", {}, "Segmentation outline")));
  }
  return card;
}

function renderResults(result) {
  const box = $("results");
  const cards = result.kind === "segmenter" ? [segmenterResult(result)]
    : result.rows.map((row, i) => classifierRow(result, row, i));
  box.replaceChildren(...cards);
  if (result.notes && result.notes.length) {
    box.append(element("ul", { class: "notes" }, ...result.notes.map((note) => element("li", {}, note))));
  }
}

// ------------------------------------------------------------------------------------------------ wiring
function wire() {
  $("bundle").addEventListener("change", bundleChanged);
  $("card-button").addEventListener("click", showCard);
  $("card-close").addEventListener("click", () => $("card-dialog").close());
  $("choose").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    send(files);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    send(await filesFromDrop(event.dataTransfer));
  });
  $("slice").addEventListener("input", (event) => { state.slice = Number(event.target.value); draw(); });
  $("show-heat").addEventListener("change", draw);
  $("show-outline").addEventListener("change", draw);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("medlens-token", state.token);
    loadBundles();
  });
}

async function start() {
  wire();
  try {
    const health = await call(`${API}/health`);
    if (health.token_required && !state.token) {
      $("token-form").hidden = false;
      setStatus("Enter the access token to begin.");
      return;
    }
  } catch (error) {
    showError(`The server does not answer: ${error.message}`);
    return;
  }
  loadBundles();
}

document.addEventListener("DOMContentLoaded", start);
