// a keypoint whose heatmap peak is under this share of the image's strongest peak is not drawn
const SHOWN_SHARE = 0.3;

// keyreid search page: plain JavaScript, no build step, no external files.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { query: null, queryName: "", info: null, selected: null, explainSeq: 0 };

function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

function setStatus(text) { $("status").textContent = text; }

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

function rejectionMessage(status, text, response) {
  if (status === 503) {
    const after = response.headers.get("Retry-After");
    return `The service is busy${after ? `; try again in ${after} s` : ""}.`;
  }
  if (status === 415) return `Rejected: ${text}. Use a JPEG, PNG or WEBP image.`;
  if (status === 413) return `Rejected: ${text}.`;
  if (status === 400) return `Rejected: ${text}.`;
  if (status === 422) return `Check the options: ${text}.`;
  return `Search failed: ${text}.`;
}

async function loadInfo() {
  try {
    const r = await fetch("/api/info");
    const info = await r.json();
    state.info = info;
    const m = info.model, ix = info.index;
    $("info").textContent = `${m.head} on ${m.backbone}, ${m.dim}-d ${m.distance} · ` +
      `${ix.size.toLocaleString()} gallery images · ${ix.backend} ${ix.type} · model ${m.fingerprint}`;
    $("top-k").max = info.limits.max_top_k;
  } catch (e) {
    $("info").textContent = "cannot reach the service";
  }
}

async function loadGallery() {
  const list = $("gallery");
  try {
    const r = await fetch("/api/gallery?limit=32");
    if (!r.ok) return;
    const body = await r.json();
    list.replaceChildren(...body.items.map((it) => {
      const li = document.createElement("li");
      li.className = "gallery-item";
      li.dataset.id = it.id;
      // cameras as the file names write them (README "Cameras"): ..._c2s1_... is c2
      li.title = `gallery #${it.id}` + (it.camid != null ? `, camera c${it.camid}` : "");
      const img = document.createElement("img");
      img.src = it.thumbnail;
      img.alt = li.title;
      li.append(img);
      li.addEventListener("click", () => searchGalleryImage(it.id));
      return li;
    }));
  } catch (e) { /* the gallery strip is optional */ }
}

async function searchGalleryImage(id) {
  let r;
  try {
    r = await fetch(`/api/gallery/${id}/image`);
  } catch (e) { showMessage("Cannot reach the service."); return; }
  if (!r.ok) { showMessage(await errorText(r)); return; }
  setQuery(await r.blob(), `gallery #${id}`);
}

function setQuery(blob, name) {
  state.query = blob;
  state.queryName = name;
  $("search-again").disabled = false;
  runSearch();
}

function optionFields() {
  const fields = {};
  for (const [id, key] of [["top-k", "top_k"], ["cameras", "cameras"], ["exclude-cameras", "exclude_cameras"],
                           ["after", "after"], ["before", "before"]]) {
    const v = $(id).value.trim();
    if (v) fields[key] = v;
  }
  if ($("rerank").checked) fields.rerank = "true";
  return fields;
}

async function runSearch() {
  if (!state.query) return;
  showMessage("");
  setStatus("searching…");
  $("explain").hidden = true;
  const form = new FormData();
  form.append("image", state.query, state.queryName || "query");
  for (const [k, v] of Object.entries(optionFields())) form.append(k, v);
  let response;
  try {
    response = await fetch("/api/search", { method: "POST", body: form });
  } catch (e) {
    setStatus("");
    showMessage("Cannot reach the service.");
    return;
  }
  if (!response.ok) {
    const text = await errorText(response);
    setStatus("");
    $("results").replaceChildren();  // never leave another query's results under an error
    $("query-box").hidden = true;
    showMessage(rejectionMessage(response.status, text, response));
    return;
  }
  const body = await response.json();
  await drawQuery(body);
  renderResults(body);
}

async function drawQuery(body) {
  const bitmap = await createImageBitmap(state.query);
  const canvas = $("query-canvas");
  const scale = Math.min(3, 256 / bitmap.height, 256 / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const kp = body.keypoints;
  const legend = $("query-legend");
  legend.replaceChildren();
  if (kp) {
    // pixel centres to canvas coordinates; points under SHOWN_SHARE of the strongest peak are
    // guesses of the head, not keypoints: hidden, with their limbs
    const pts = kp.points.map(([x, y, s]) => [(x + 0.5) * scale, (y + 0.5) * scale, s]);
    const peak = Math.max(...pts.map((p) => p[2]), 1e-6);
    const shown = pts.map((p) => p[2] >= SHOWN_SHARE * peak);
    ctx.lineWidth = 2;
    for (const [a, b] of kp.limbs) {
      if (!shown[a] || !shown[b]) continue;
      ctx.strokeStyle = kp.colours[a] === kp.colours[b] ? kp.colours[a] : kp.centre_colour;
      ctx.beginPath(); ctx.moveTo(pts[a][0], pts[a][1]); ctx.lineTo(pts[b][0], pts[b][1]); ctx.stroke();
    }
    pts.forEach((p, i) => {
      if (!shown[i]) return;
      ctx.fillStyle = kp.colours[i];
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 1;
      ctx.beginPath(); ctx.arc(p[0], p[1], 3.5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    });
    const hidden = shown.filter((v) => !v).length;
    for (const [label, colour] of [["left", kp.side_colours.left], ["right", kp.side_colours.right],
                                   ["centre", kp.centre_colour]]) {
      const item = document.createElement("span");
      item.className = "legend-item";
      const dot = document.createElement("span");
      dot.className = "legend-dot";
      dot.style.background = colour;
      item.append(dot, label);
      legend.append(item);
    }
    const note = document.createElement("span");
    note.textContent = hidden ? `${hidden} faint point(s) hidden (under ${Math.round(100 * SHOWN_SHARE)} % of ` +
      "the strongest peak)" : "";
    legend.append(note);
  }
  legend.hidden = !kp;
  $("query-note").textContent = `${body.query.width}×${body.query.height} ${body.query.format}` +
    (body.query.frames > 1 ? ` (first of ${body.query.frames} frames)` : "") +
    (kp ? ` · predicted ${kp.name} keypoints` : "");
  $("query-box").hidden = false;
}

function renderResults(body) {
  const items = body.results.map((hit) => {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.id = hit.id;
    const img = document.createElement("img");
    img.src = hit.thumbnail;
    img.alt = `gallery #${hit.id}`;
    const score = document.createElement("div");
    score.className = "score";
    // re-ranked lists are ordered by the re-ranked distance: show it, so the numbers run in
    // order down the list (the cosine stays in the tooltip)
    score.textContent = hit.rerank_distance != null ?
      `${hit.rank}. d ${hit.rerank_distance.toFixed(4)}` : `${hit.rank}. ${hit.score.toFixed(4)}`;
    score.title = hit.rerank_distance != null ?
      `re-ranked distance (lower is closer); cosine similarity ${hit.score.toFixed(4)}` : "cosine similarity";
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = [`#${hit.id}`, hit.camera != null ? `c${hit.camera}` : null,
                        hit.pid != null ? `pid ${hit.pid}` : null].filter(Boolean).join(" · ");
    li.append(img, score, meta);
    li.addEventListener("click", () => selectMatch(li, hit));
    li.addEventListener("dblclick", () => searchGalleryImage(hit.id));
    return li;
  });
  $("results").replaceChildren(...items);
  const t = body.took_ms.total.toFixed(0);
  setStatus(body.results.length ? `${body.results.length} results in ${t} ms · click one to see why it matches, ` +
            `double-click to search with it` : "no gallery image passes the filters");
}

async function selectMatch(li, hit) {
  for (const el of document.querySelectorAll("#results li.selected")) el.classList.remove("selected");
  li.classList.add("selected");
  const seq = ++state.explainSeq;
  const form = new FormData();
  form.append("image", state.query, state.queryName || "query");
  let r;
  try {
    r = await fetch(`/api/explain?gallery_id=${hit.id}`, { method: "POST", body: form });
  } catch (e) { return; }
  if (seq !== state.explainSeq) return;  // a later click won
  if (!r.ok) {
    $("explain").hidden = false;
    $("explain-picture").removeAttribute("src");
    $("explain-caption").textContent = "";
    $("explain-note").textContent = `no explanation: ${await errorText(r)}`;
    return;
  }
  const body = await r.json();
  $("explain-picture").src = body.picture;
  $("explain-caption").textContent = `query vs gallery #${hit.id}: cosine similarity ${body.score.toFixed(4)}`;
  $("explain-note").textContent = body.note || "";
  $("explain").hidden = false;
}

function setUpDrop() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) setQuery(file, file.name);
    e.target.value = "";
  });
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => {
    const file = e.dataTransfer.files[0];
    if (file) setQuery(file, file.name);
  });
  $("options").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
}

setUpDrop();
loadInfo();
loadGallery();
