// The smalldata page: plain JavaScript over the REST API (no build step). The API key stays in
// sessionStorage: it is gone when the tab closes.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { mode: "projects", project: null, polling: null, keysNeeded: true };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

const pct = (x) => `${(100 * x).toFixed(1)}%`;
const points = (x) => `${(100 * x).toFixed(1)} points`;

// The accuracy as counted out of fold, with the Wilson interval the API gives: on 15 examples even
// 15 right leaves the true accuracy anywhere from about 80% up, which a fold spread of 0 would hide.
function accuracyWords(version) {
  const a = version.accuracy_interval;
  if (!a) return `${pct(version.summary.accuracy.mean)} mean cross-validated accuracy (${version.summary.protocol}).`;
  const few = a.n < 100 ? ` With ${a.n} examples the true accuracy may lie anywhere in that interval; more examples narrow it.` : "";
  return `Cross-validated accuracy ${pct(a.accuracy)}: ${a.correct} of ${a.n} examples right out of fold (${version.summary.protocol}), ` +
    `${Math.round(100 * a.confidence)}% interval ${pct(a.low)} to ${pct(a.high)}.${few}`;
}

// What changed from the version before, in a sentence: the examples per class, and the accuracy
// before and now with their intervals (a gain inside both intervals may be luck of the folds).
function changeWords(version) {
  const c = version.changes;
  if (!c) return version.number === 1 ? "The project's first version." : "What changed is not known (made before versions kept it).";
  const counts = (byClass) => Object.entries(byClass).map(([label, n]) => `${label} ${n}`).join(", ");
  const total = (byClass) => Object.values(byClass).reduce((a, b) => a + b, 0);
  const parts = [];
  if (!c.examples_known) parts.push("which examples changed is not known (version " + c.previous_number + " was made before versions kept it)");
  else {
    const moved = c.relabelled.reduce((a, r) => a + r.n, 0);
    if (total(c.added)) parts.push(`${total(c.added)} added (${counts(c.added)})`);
    if (total(c.removed)) parts.push(`${total(c.removed)} removed (${counts(c.removed)})`);
    if (moved) parts.push(`${moved} relabelled (${c.relabelled.map((r) => `${r.from} → ${r.to} ${r.n}`).join(", ")})`);
    if (!parts.length) parts.push("the same examples");
  }
  const before = c.accuracy_before ? intervalWords(c.accuracy_before) : "not known";
  const now = version.accuracy_interval ? intervalWords(version.accuracy_interval) : pct(version.summary.accuracy.mean);
  return `Since version ${c.previous_number}: ${parts.join("; ")}. Accuracy ${before} before, ${now} now.`;
}

const intervalWords = (a) => `${pct(a.accuracy)} (${pct(a.low)} to ${pct(a.high)})`;

function accuracyCell(version) {
  const a = version.accuracy_interval;
  return a ? intervalWords(a) : pct(version.summary.accuracy.mean);
}

// kind: "error" (something went wrong), "note" (it worked) or "hint" (what to do next).
function say(text, kind = "error") {
  const box = $("#message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

const KEY_HINT = "Enter your API key above to see and change your projects (make one with `smalldata api-key create` on the server's machine).";

// A 401 is no failure: the page needs a key, and says so as a hint.
class NeedsKey extends Error {}

function storedKey() {
  return sessionStorage.getItem("smalldata-key") || "";
}

async function api(path, options = {}) {
  const headers = options.headers || {};
  const key = sessionStorage.getItem("smalldata-key");
  if (key) headers["X-API-Key"] = key;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { ...options, headers });
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (response.status === 401) {
    if (!state.keysNeeded) { state.keysNeeded = true; showKeyForm(); }  // a key was made meanwhile
    throw new NeedsKey(KEY_HINT);
  }
  if (!response.ok) {
    const detail = body && body.detail !== undefined ? body.detail : body;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

// Reads need the key too, and an <img src> or a link sends no header: the bytes are fetched with
// the key and shown or saved from a blob: URL.
async function keyedBytes(path) {
  const key = sessionStorage.getItem("smalldata-key");
  const response = await fetch(path, { headers: key ? { "X-API-Key": key } : {} });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(typeof body.detail === "string" ? body.detail : `${response.status} ${response.statusText}`);
  }
  return response.blob();
}

async function keyedBlob(path) {
  return URL.createObjectURL(await keyedBytes(path));
}

function keyedImage(path, alt) {
  const image = el("img", { alt });
  keyedBlob(path).then((url) => { image.src = url; }).catch(() => { image.alt = `${alt} (not available)`; });
  return image;
}

function keyedDownload(link, path, filename) {
  link.href = "#";
  link.onclick = (e) => { e.preventDefault(); guarded(async () => {
    const save = el("a", { href: await keyedBlob(path), download: filename });
    document.body.append(save); save.click(); save.remove();
  }); };
}

function keyedPage(link, path) {
  link.onclick = (e) => {
    e.preventDefault();
    const tab = window.open("", "_blank");  // opened now, while the click counts: a blocker lets it through
    guarded(async () => { const url = await keyedBlob(path); if (tab) tab.location = url; else window.location = url; });
  };
}

async function guarded(action) {
  try {
    say("");
    await action();
  } catch (error) {
    sayError(error);
  }
}

// For what the page does by itself (loading a gallery page): an error is said, but the message of
// what the user just did is not cleared first.
async function quietly(action) {
  try {
    await action();
  } catch (error) {
    sayError(error);
  }
}

function sayError(error) {
  say(error.message, error instanceof NeedsKey ? "hint" : "error");
}

// ------------------------------------------------------------------------------- projects list

async function showProjects() {
  const projects = await api("/api/projects");  // first: a refused key shows no project form
  $("#projects-view").hidden = false;
  const list = $("#project-list");
  list.replaceChildren();
  for (const project of projects) {
    list.append(el("li", {}, el("a", { href: `#project-${project.id}` }, project.name),
      ` (${project.modality}s, ${project.n_examples} examples${project.active_version ? ", trained" : ""})`));
  }
  if (!list.children.length) list.append(el("li", {}, "No project yet: create one below."));
}

async function createProject(event) {
  event.preventDefault();
  const modality = document.querySelector("input[name=modality]:checked").value;
  const json = { name: $("#project-name").value, modality };
  if ($("#project-budget").value.trim()) json.budget = $("#project-budget").value.trim();
  const project = await api("/api/projects", { method: "POST", json });
  location.hash = `#project-${project.id}`;
}

// ------------------------------------------------------------------------------------ project

async function showProject(id) {
  const project = await api(`/api/projects/${id}`);
  state.project = project;
  $("#project-view").hidden = false;
  document.body.dataset.modality = project.modality;
  $("#project-title").textContent = `${project.name} (${project.modality}s)`;
  showData(project);
  $("#budget").value = budgetWords(project.budget_s);
  $("#budget-note").textContent = (project.budget_is_default ? "the default, as `smalldata train`; " : "") +
    "90s, 5m, 1h; 0 for the fastest (frozen backbones only). Fine-tuning is tried when its estimated cost fits.";
  showJob(project.latest_job);
  await showResult(project.active_version);
  await showVersions();
  if (project.latest_job && ["queued", "running"].includes(project.latest_job.state)) poll(project.latest_job.id);
}

// ----------------------------------------------------------------------------- the gallery

// One fold-out per class: thumbnails (texts: their first lines), a page at a time.
const GALLERY_PAGE = 24;
const openClasses = new Set();  // kept open across a refresh (a relabel changes the counts)

function showGallery(project) {
  const gallery = $("#gallery");
  gallery.replaceChildren(...Object.entries(project.counts).map(([label, n]) => {
    const cards = el("div", { class: "findings" });
    const more = el("button", { type: "button", hidden: "" }, "Show more");
    const fold = el("details", { "data-label": label }, el("summary", {}, `${label}: ${n} example${n === 1 ? "" : "s"}`), cards, more);
    let offset = 0;
    const page = () => quietly(async () => {
      const query = new URLSearchParams({ label, offset, limit: GALLERY_PAGE });
      const examples = await api(`/api/projects/${project.id}/examples?${query}`);
      offset += examples.length;
      cards.append(...examples.map((e) => exampleCard(e.id, e.filename || `example ${e.id}`,
        { text: e.text === null ? null : firstLines(e.text), onChange: () => showProject(project.id) })));
      more.hidden = offset >= n;
    });
    more.addEventListener("click", page);
    fold.addEventListener("toggle", () => {
      if (fold.open) openClasses.add(label); else openClasses.delete(label);
      if (fold.open && !offset) page();
    });
    if (openClasses.has(label)) fold.open = true;
    return fold;
  }));
}

function firstLines(text, lines = 3, chars = 160) {
  const kept = text.split("\n").slice(0, lines).join("\n");
  return kept.length > chars ? `${kept.slice(0, chars)}…` : kept + (text.length > kept.length ? "…" : "");
}

// ------------------------------------------------------------------- several class folders at once

const IMAGE_NAME = /\.(jpe?g|png|gif|bmp|webp|tiff?)$/i;
const FOLDER_BATCH = 40;  // images in one request: well under the service's limits on files and bytes

// The files under dropped folders, with their paths ("/flowers/rose/1.jpg").
async function filesUnder(entries) {
  const found = [];
  async function visit(entry) {
    if (entry.isFile) {
      found.push({ file: await new Promise((resolve, reject) => entry.file(resolve, reject)), path: entry.fullPath });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {  // readEntries answers in pieces (100 at a time in Chromium) until it answers none
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await visit(child);
      }
    }
  }
  for (const entry of entries) await visit(entry);
  return found;
}

// Each image goes to the class its folder names: ".../rose/1.jpg" is a rose. Images outside any
// folder take the Class field, if it is filled.
async function uploadFolders(items) {
  const images = items.filter(({ file }) => file.type.startsWith("image/") || IMAGE_NAME.test(file.name));
  const skipped = items.length - images.length;
  if (!images.length)
    throw new Error(`the dropped folders hold no images${items.length ? ` (${items.length} other files)` : ""}: ` +
                    "drop folders named after their class, each holding that class's images (JPEG, PNG, ...)");
  const classes = new Map();
  const loose = [];
  for (const item of images) {
    const parts = item.path.split("/").filter(Boolean);
    const label = parts.length > 1 ? parts[parts.length - 2] : $("#image-label").value.trim();
    if (!label) { loose.push(item.file.name); continue; }
    if (!classes.has(label)) classes.set(label, []);
    classes.get(label).push(item.file);
  }
  const added = new Map();
  const rejected = loose.map((name) => ({ name, reason: "in no folder, and the Class field is empty: its class is unknown" }));
  for (const [label, files] of classes) {
    for (let start = 0; start < files.length; start += FOLDER_BATCH) {
      const form = new FormData();
      form.append("label", label);
      for (const file of files.slice(start, start + FOLDER_BATCH)) form.append("files", file);
      try {
        const result = await api(`/api/projects/${state.project.id}/examples/images`, { method: "POST", body: form });
        added.set(label, (added.get(label) || 0) + result.added.length);
        rejected.push(...result.rejected);
      } catch (error) {  // a class none of whose images could be added: said, and the others go on
        if (error instanceof NeedsKey) throw error;
        rejected.push({ name: `class ${label}`, reason: error.message });
      }
    }
  }
  await showProject(state.project.id);
  const total = [...added.values()].reduce((a, b) => a + b, 0);
  const perClass = [...added].filter(([, n]) => n).map(([label, n]) => `${label} ${n}`).join(", ");
  say(`added ${total} example${total === 1 ? "" : "s"} to ${[...added.values()].filter(Boolean).length} classes` +
      (perClass ? ` (${perClass})` : "") + (skipped ? `; ${skipped} files that are not images skipped` : "") +
      (rejected.length ? `; ${rejected.length} left out (below)` : ""), total ? "note" : "error");
  $("#rejected").replaceChildren(...rejected.map((r) => el("li", {}, `${r.name}: ${r.reason}`)));
}

function showRejected(result) {
  const n = result.added.length;
  say(`added ${n} example${n === 1 ? "" : "s"}` + (result.rejected.length ? `; ${result.rejected.length} left out (below)` : ""), "note");
  $("#rejected").replaceChildren(...result.rejected.map((r) => el("li", {}, `${r.name}: ${r.reason}`)));
}

async function upload(path, form) {
  const result = await api(path, { method: "POST", body: form });
  await showProject(state.project.id);
  showRejected(result);
}

let dropped = [];
function imageFiles() {
  return dropped.length ? dropped : Array.from($("#image-files").files);
}

async function addImages(event) {
  event.preventDefault();
  const files = imageFiles();
  if (!files.length) throw new Error("choose or drop some images first");
  if (!$("#image-label").value.trim()) throw new Error("type the class of these images first (or drop class folders: their names are the classes)");
  const form = new FormData();
  form.append("label", $("#image-label").value);
  for (const file of files) form.append("files", file);
  await upload(`/api/projects/${state.project.id}/examples/images`, form);
  dropped = [];
  $("#image-files").value = "";
  $("#drop").firstChild.textContent = "Drop images of this class here, or ";
}

async function addFile(event, input, kind) {
  event.preventDefault();
  if (!$(input).files.length) throw new Error("choose a file first");
  const form = new FormData();
  form.append("file", $(input).files[0]);
  await upload(`/api/projects/${state.project.id}/examples/${kind}`, form);
  $(input).value = "";
}

async function addText(event) {
  event.preventDefault();
  const result = await api(`/api/projects/${state.project.id}/examples/texts`, {
    method: "POST", json: { examples: [{ text: $("#text-input").value, label: $("#text-label").value }] } });
  $("#text-input").value = "";
  await showProject(state.project.id);
  showRejected(result);
}

async function addUnlabeled(event) {
  event.preventDefault();
  const id = state.project.id;
  let result;
  if (state.project.modality === "image") {
    const files = Array.from($("#unlabeled-images").files);
    if (!files.length) throw new Error("choose some unlabeled images first");
    const form = new FormData();
    for (const file of files) form.append("files", file);
    result = await api(`/api/projects/${id}/unlabeled/images`, { method: "POST", body: form });
    $("#unlabeled-images").value = "";
  } else {
    const texts = $("#unlabeled-texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
    if (!texts.length) throw new Error("type some unlabeled texts first, one a line");
    result = await api(`/api/projects/${id}/unlabeled/texts`, { method: "POST", json: { texts } });
    $("#unlabeled-texts").value = "";
  }
  await showProject(id);
  say(`added ${result.added} unlabeled example${result.added === 1 ? "" : "s"}, ${result.n_unlabeled} in all` +
      (result.rejected.length ? `; ${result.rejected.length} left out (below)` : ""), "note");
  $("#rejected").replaceChildren(...result.rejected.map((r) => el("li", {}, `${r.name}: ${r.reason}`)));
}

// -------------------------------------------------------------------------------------- jobs

// 180 -> "3m", 90 -> "90s", 5400 -> "1.5h": what the budget field takes back.
function budgetWords(seconds) {
  if (seconds >= 3600 && Number.isInteger(seconds / 360)) return `${seconds / 3600}h`;
  if (seconds >= 60 && Number.isInteger(seconds / 6)) return `${+(seconds / 60).toFixed(1)}m`;
  return `${seconds}s`;
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

async function saveBudget() {
  const project = await api(`/api/projects/${state.project.id}`, { method: "PATCH", json: { budget: $("#budget").value.trim() } });
  state.project = project;
  $("#budget").value = budgetWords(project.budget_s);
  say(`each training now takes at most ${duration(project.budget_s)}${project.budget_s ? "" : " (frozen backbones only)"}; the next one uses it`, "note");
}

// The stage's own pace, from the moments the page saw its counts: the time left in this stage.
const pace = { stage: null, since: 0, done: 0 };

function stageTimeLeft(job) {
  if (!job.total || job.state !== "running") { pace.stage = null; return null; }
  const now = performance.now();
  if (pace.stage !== job.stage || job.done < pace.done) Object.assign(pace, { stage: job.stage, since: now, done: job.done });
  const rate = (job.done - pace.done) / ((now - pace.since) / 1000);
  return rate > 0 ? (job.total - job.done) / rate : null;
}

async function train() {
  const job = await api(`/api/projects/${state.project.id}/jobs`, { method: "POST" });
  showJob(job);
  poll(job.id);
}

function showJob(job) {
  const bar = $("#job-progress");
  const running = job && ["queued", "running"].includes(job.state);
  $("#cancel").hidden = !running;
  $("#train").disabled = running;
  if (!job) { $("#job").textContent = "Not trained yet."; bar.hidden = true; return; }
  let text = `Job ${job.id}: ${job.state}. ${job.stage}`;
  if (job.total) text += ` (${job.done} of ${job.total})`;
  if (job.error) text += ` Error: ${job.error}`;
  $("#job").textContent = text;
  bar.hidden = !running || !job.total;
  if (job.total) bar.value = job.done / job.total;
  const times = [];
  const stageLeft = stageTimeLeft(job);
  if (stageLeft !== null) times.push(`about ${duration(stageLeft)} left in this stage`);
  if (job.state === "running" && job.budget_s && job.elapsed_s !== null)
    times.push(`at most ${duration(job.budget_s - job.elapsed_s)} left of its ${duration(job.budget_s)} budget`);
  else if (job.state === "running" && job.budget_s === 0) times.push("budget 0: frozen backbones only");
  $("#job-time").textContent = times.join("; ");
  $("#cancel").onclick = () => guarded(async () => showJob(await api(`/api/jobs/${job.id}/cancel`, { method: "POST" })));
}

function poll(jobId) {
  clearInterval(state.polling);
  state.polling = setInterval(async () => {
    try {
      const job = await api(`/api/jobs/${jobId}`);
      showJob(job);
      const reportPending = job.state === "succeeded" && !job.stage.includes("report is ready") && !job.stage.includes("could not");
      if (!["queued", "running"].includes(job.state) && !reportPending) {
        clearInterval(state.polling);
        await showProject(state.project.id);
      } else if (job.state === "succeeded" && !$("#result").dataset.version) {
        await showProject(state.project.id);  // the model is served: show it while the report is written
      }
    } catch (error) {
      sayError(error);
    }
  }, 700);
}

// ----------------------------------------------------------------------------------- results

async function showResult(version) {
  const section = $("#result");
  section.hidden = !version;
  $("#try").hidden = !version;
  if (!version) { delete section.dataset.version; return; }
  showSnippets();
  section.dataset.version = version.id;
  const s = version.summary;
  const on = s.chosen.includes(s.features) ? "" : ` on ${s.features}`;  // "logistic-regression on X" names X already
  let text = `Version ${version.number}: ${s.chosen}${on}. ${accuracyWords(version)}`;
  if (s.baseline) {
    const gain = 100 * (s.accuracy.mean - s.baseline.mean);
    text += ` Mean accuracy over the folds: ${pct(s.accuracy.mean)}, against ${pct(s.baseline.mean)} for the baseline (${s.baseline.name}), ${gain >= 0 ? "+" : ""}${gain.toFixed(1)} points.`;
  }
  for (const [name, c] of Object.entries(s.contributions || {})) {
    const from = name.includes("unlabeled pool") ? ` (from ${s.n_unlabeled} unlabeled examples)` : "";
    text += ` ${name}${from}: ${c.mean_points >= 0 ? "+" : ""}${c.mean_points.toFixed(1)} ± ${c.std_points.toFixed(1)} points over ${c.over} on the same folds.`;
  }
  if (s.fine_tuning && s.fine_tuning.reason) text += ` Fine-tuning: ${s.fine_tuning.reason}.`;
  if (s.unknown) text += ` ${s.unknown.replace(/^unknown: an/, "An")}.`;
  $("#accuracy").textContent = text;
  $("#changes").textContent = changeWords(version);
  $("#candidates tbody").replaceChildren(...s.candidates.map((c) => el("tr", {},
    el("td", {}, c.name + (c.name === s.chosen ? " (chosen)" : "")), el("td", {}, pct(c.mean)), el("td", {}, points(c.std)))));
  $("#confusion-source").textContent = `(rows: true class, columns: predicted; ${s.confusion_source})`;
  const head = el("tr", {}, el("th", { scope: "col" }, "true \\ predicted"), ...s.labels.map((l) => el("th", { scope: "col" }, l)));
  const rows = s.confusion.map((row, i) => el("tr", {}, el("th", { scope: "row" }, s.labels[i]),
    ...row.map((n, j) => el("td", { class: n && i !== j ? "off" : i === j ? "diag" : "" }, n))));
  $("#confusion").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  $("#confused").replaceChildren(...(s.most_confused.length ? s.most_confused.slice(0, 5).map((p) =>
    el("li", {}, `${p.true_label} taken for ${p.predicted_label}: ${p.count} times (${pct(p.rate)} of ${p.true_label})`))
    : [el("li", {}, "none: every example was predicted right in cross-validation")]));
  showFindings(version.findings);
  showSuggestions(version.findings);
  showCurve(version.findings && version.findings.learning_curve);
  const report = el("a", { href: "#" }, "Open the full report");
  keyedPage(report, `/api/versions/${version.id}/report`);
  $("#report-link").replaceChildren(version.report_ready ? report : "The report is being written…");
  keyedDownload($("#download"), `/api/versions/${version.id}/download`, `model-v${version.number}.zip`);
}

// `text`: the example's text where the caller has it already (the gallery); `onChange`: after a
// relabel or a removal (the gallery shows the new counts); `suggested`: a class offered in one
// click; `oneClick`: removal needs no confirmation (the findings: the message can undo it).
function exampleCard(id, caption, { text = null, onChange = null, suggested = null, oneClick = false } = {}) {
  const card = el("figure", { class: "card", "data-examples": String(id) });
  if (text !== null) card.append(el("blockquote", {}, text));
  else preview(card, id);
  const relabel = el("button", { type: "button", onclick: () => guarded(async () => {
    const label = prompt("New class for this example:");
    if (label === null) return;  // cancelled
    if (!label.trim()) throw new Error("a class name cannot be empty: the example keeps its class");
    await api(`/api/examples/${id}`, { method: "PATCH", json: { label: label.trim() } });
    if (onChange) await onChange();
    say(`relabeled ${label.trim()}; train again to use it`, "note");
  }) }, "Relabel");
  const remove = oneClick ? removeButton(id, card, onChange) : el("button", { type: "button", onclick: () => guarded(async () => {
    if (confirm("Remove this example from the project?")) {
      await api(`/api/examples/${id}`, { method: "DELETE" }); card.remove();
      if (onChange) await onChange();
      say("removed; train again to use the change", "note");
    }
  }) }, "Remove");
  const accept = suggested === null ? "" : el("button", { type: "button", class: "suggested", onclick: () => guarded(async () => {
    await api(`/api/examples/${id}`, { method: "PATCH", json: { label: suggested } });
    card.remove();
    if (onChange) await onChange();
    say(`relabeled ${suggested}; train again to use it`, "note");
  }) }, `Label it ${suggested}`);
  card.append(el("figcaption", {}, caption, el("br"), accept, accept ? " " : "", relabel, " ", remove));
  return card;
}

// The learning curve: the sentence `smalldata curve` prints, and its points (mean ± std over folds).
function showCurve(curve) {
  $("#curve-plot").replaceChildren();
  if (!curve) { $("#curve-summary").textContent = "Drawn with the report…"; return; }
  $("#curve-summary").textContent = `${curve.summary.charAt(0).toUpperCase()}${curve.summary.slice(1)} (learning curve of ${curve.of}).`;
  if (curve.points.length < 2) return;
  const NS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const [w, h, left, bottom] = [360, 180, 40, 30];
  const xs = curve.points.map((p) => p.per_class);
  const low = Math.max(0, Math.min(...curve.points.map((p) => p.mean - p.std)) - 0.05);
  const x = (n) => left + (w - left - 10) * (n - xs[0]) / (xs[xs.length - 1] - xs[0] || 1);
  const y = (a) => 10 + (h - bottom - 10) * (1 - (a - low) / (1 - low || 1));
  const plot = svg("svg", { width: w, height: h, role: "img", "aria-label": "learning curve" });
  plot.append(svg("line", { x1: left, y1: h - bottom, x2: w - 10, y2: h - bottom, stroke: "#888" }),
              svg("line", { x1: left, y1: 10, x2: left, y2: h - bottom, stroke: "#888" }),
              svg("text", { x: left - 4, y: y(1) + 4, "text-anchor": "end", "font-size": 10 }, "100%"),
              svg("text", { x: left - 4, y: y(low) + 4, "text-anchor": "end", "font-size": 10 }, pct(low)),
              svg("text", { x: (w + left) / 2, y: h - 4, "text-anchor": "middle", "font-size": 11 }, "examples per class"),
              svg("polyline", { points: curve.points.map((p) => `${x(p.per_class)},${y(p.mean)}`).join(" "), fill: "none", stroke: "#1f5fbf" }));
  for (const p of curve.points) {
    plot.append(svg("line", { x1: x(p.per_class), x2: x(p.per_class), y1: y(Math.min(1, p.mean + p.std)), y2: y(Math.max(low, p.mean - p.std)), stroke: "#1f5fbf" }),
                svg("circle", { cx: x(p.per_class), cy: y(p.mean), r: 3, fill: "#1f5fbf" }),
                svg("text", { x: x(p.per_class), y: h - bottom + 12, "text-anchor": "middle", "font-size": 10 }, p.per_class));
  }
  $("#curve-plot").append(plot);
}

// The unlabeled examples worth labeling next (`smalldata suggest`'s ranking), one click each.
function showSuggestions(findings) {
  const box = $("#suggestions");
  box.replaceChildren();
  if (!findings) return;
  const suggested = findings.suggestions || [];
  if (!suggested.length) {
    box.append(el("p", {}, "Add unlabeled examples (below the uploads) and train again: the ones most worth labeling show here."));
    return;
  }
  for (const s of suggested) box.append(suggestionCard(s));
}

function suggestionCard(s) {
  const id = s.unlabeled_id;
  const card = el("figure", { class: "card" });
  preview(card, id, "unlabeled");
  const give = async (label) => {
    try {
      await api(`/api/unlabeled/${id}/label`, { method: "POST", json: { label } });
    } catch (error) {
      if (/no unlabeled example/.test(error.message)) { card.remove(); throw new Error("that one was labeled or removed already"); }
      throw error;
    }
    card.remove();
    await refreshCounts();
    say(`labeled ${label}; train again to use it`, "note");
  };
  const accept = el("button", { type: "button", class: "suggested", onclick: () => guarded(() => give(s.predicted_label)) },
    `It is ${s.predicted_label}`);
  const other = el("button", { type: "button", onclick: () => guarded(async () => {
    const label = prompt("Its class:");
    if (label === null) return;
    if (!label.trim()) throw new Error("a class name cannot be empty: the example stays unlabeled");
    await give(label.trim());
  }) }, "Another class");
  card.append(el("figcaption", {}, `the model says ${s.predicted_label} (${pct(s.probability)})`, el("br"), accept, " ", other));
  return card;
}

// The counts, the problems and the gallery; after a change from the findings, only these (the
// result stays as it is until the next training).
function showData(project) {
  const counts = $("#counts tbody");
  counts.replaceChildren(...Object.entries(project.counts).map(([label, n]) => el("tr", {}, el("td", {}, label), el("td", {}, n))));
  if (!counts.children.length) counts.append(el("tr", {}, el("td", { colspan: 2 }, "no examples yet")));
  $("#problems").replaceChildren(...project.problems.map((p) => el("li", {}, p)));
  $("#unlabeled-count").textContent = `The project has ${project.n_unlabeled} unlabeled example${project.n_unlabeled === 1 ? "" : "s"}.`;
  showGallery(project);
}

async function refreshCounts() {
  showData(await api(`/api/projects/${state.project.id}`));
}

// The report's findings, each with what fixes it in one click: a suspected label error takes the
// suggested class; an outlier its nearest class (where that is another) or leaves; of two
// near-duplicates, either one leaves. A removal can be undone from the message.
function showFindings(findings) {
  const box = $("#findings");
  box.replaceChildren();
  if (!findings) { box.append(el("p", {}, "Looking for suspect labels, outliers and near-duplicates…")); return; }
  const changed = (id) => async () => { dropFindings(id); await refreshCounts(); };
  for (const issue of (findings.label_issues || []).slice(0, 12))
    box.append(exampleCard(issue.example_id, `labeled ${issue.given_label}, looks like ${issue.suggested_label} (suspected label error)`,
      { suggested: issue.suggested_label, onChange: changed(issue.example_id), oneClick: true }));
  for (const outlier of (findings.outliers || []).slice(0, 6)) {
    const other = outlier.nearest_class && outlier.nearest_class !== outlier.label ? outlier.nearest_class : null;
    const near = outlier.nearest_class ? `, nearest class ${outlier.nearest_class}` : "";
    box.append(exampleCard(outlier.example_id, `labeled ${outlier.label}${near}: unlike every class (outlier)`,
      { suggested: other, onChange: changed(outlier.example_id), oneClick: true }));
  }
  for (const pair of (findings.near_duplicates || []).slice(0, 6)) box.append(duplicatesCard(pair, changed));
  if (!box.children.length) box.append(el("p", {}, "No suspected label errors, outliers or near-duplicates."));
  for (const issue of (findings.label_issues || []).slice(0, 12)) dropIfDealtWith(issue.example_id, issue.given_label);
  for (const outlier of (findings.outliers || []).slice(0, 6)) dropIfDealtWith(outlier.example_id, outlier.label);
  for (const pair of (findings.near_duplicates || []).slice(0, 6)) for (const id of pair.example_ids) dropIfDealtWith(id, null);
}

// The findings are the report's, as they were at training; an example relabelled or removed since
// (here, or before this page was opened) is dealt with: its cards go.
function dropIfDealtWith(id, label) {
  api(`/api/examples/${id}`)
    .then((example) => { if (label !== null && example.label !== label) dropFindings(id); })
    .catch((error) => { if (/^no example/.test(error.message)) dropFindings(id); });
}

// Two near-duplicates side by side, each with its own one-click Remove.
function duplicatesCard(pair, changed) {
  const [first, second] = pair.example_ids;
  const same = pair.labels[0] === pair.labels[1];
  const caption = `near-duplicates (similarity ${pair.similarity.toFixed(2)}), ` +
    (same ? `both labeled ${pair.labels[0]}` : `labeled ${pair.labels[0]} and ${pair.labels[1]}`);
  const card = el("figure", { class: "card pair", "data-examples": `${first} ${second}` });
  const halves = pair.example_ids.map((id, i) => {
    const half = el("div", {});
    preview(half, id);
    half.append(removeButton(id, card, changed(id), `Remove ${i ? "the second" : "the first"}`));
    return half;
  });
  card.append(el("div", { class: "halves" }, ...halves), el("figcaption", {}, caption));
  return card;
}

// An example's thumbnail (texts: their first lines) at the top of `box`.
// An example's thumbnail (texts: their first lines) at the top of `box`; `kind` "examples" or "unlabeled".
function preview(box, id, kind = "examples") {
  const path = `/api/${kind}/${id}/content`;
  if (state.project.modality === "image") box.prepend(keyedImage(path, `${kind === "examples" ? "example" : kind} ${id}`));
  else api(path).then((body) => box.prepend(el("blockquote", {}, firstLines(body)))).catch(() => {});
}

// The cards of the findings that name an example just changed or removed: done with.
function dropFindings(id) {
  for (const card of document.querySelectorAll("#findings figure"))
    if (card.dataset.examples.split(" ").includes(String(id))) card.remove();
}

// One click removes the example; the message offers to put it back (its content and class, read
// before it goes, are uploaded again: a new id, the same example).
function removeButton(id, card, onChange, text = "Remove") {
  return el("button", { type: "button", class: "remove", onclick: () => guarded(async () => {
    const kept = await api(`/api/examples/${id}`);
    const content = kept.text === null ? await keyedBytes(`/api/examples/${id}/content`) : null;
    await api(`/api/examples/${id}`, { method: "DELETE" });
    card.remove();
    if (onChange) await onChange();
    say(`removed an example of ${kept.label}; train again to use the change `, "note");
    $("#message").append(el("button", { type: "button", id: "undo", onclick: () => guarded(async () => {
      await putBack(kept, content);
      await refreshCounts();
      say(`put back the example of ${kept.label}`, "note");
    }) }, "Undo"));
  }) }, text);
}

async function putBack(example, content) {
  const id = state.project.id;
  if (example.text !== null) {
    await api(`/api/projects/${id}/examples/texts`, { method: "POST", json: { examples: [{ text: example.text, label: example.label }] } });
    return;
  }
  const form = new FormData();
  form.append("label", example.label);
  form.append("files", content, example.filename || `example-${example.id}`);
  await api(`/api/projects/${id}/examples/images`, { method: "POST", body: form });
}

async function showVersions() {
  const versions = await api(`/api/projects/${state.project.id}/versions`);
  $("#versions tbody").replaceChildren(...versions.map((v) => el("tr", {},
    el("td", {}, `${v.number}${v.active ? " (serving)" : ""}`), el("td", {}, v.summary.n_examples),
    el("td", {}, accuracyCell(v)), el("td", { class: "changed" }, changeWords(v)), el("td", {}, v.created.replace("T", " ").slice(0, 19)),
    el("td", {}, v.active ? "" : el("button", { type: "button", onclick: () => guarded(async () => {
      await api(`/api/versions/${v.id}/activate`, { method: "POST" }); await showProject(state.project.id);
    }) }, "Serve this one"), " ", versionDownload(v)))));
}

function versionDownload(version) {
  const link = el("a", { href: "#" }, "download");
  keyedDownload(link, `/api/versions/${version.id}/download`, `model-v${version.number}.zip`);
  return link;
}

// ------------------------------------------------------------------------------------ predict

function predictPath(kind) {
  return state.mode === "model" ? `/api/predict/${kind}` : `/api/projects/${state.project.id}/predict/${kind}`;
}

// The threshold typed on the page (empty: none; the model's floor applies either way), checked here as the API checks it.
function tryThreshold() {
  const typed = $("#try-threshold").value.trim();
  if (!typed) return null;
  const value = Number(typed);
  if (!(value >= 0 && value <= 1)) throw new Error("the threshold is a probability between 0 and 1, e.g. 0.8");
  return value;
}

// Two decimals, or four near 1, where two would round a cut-off of 0.9969 up to 1.00.
const shownCutOff = (p) => (p < 0.99 ? p.toFixed(2) : p.toFixed(4));

function showPrediction(result) {
  const prediction = result.predictions[0];
  const rows = Object.entries(prediction.probabilities).map(([label, p]) => el("tr", {},
    el("td", {}, label), el("td", {}, el("meter", { min: 0, max: 1, value: p }, pct(p))), el("td", {}, pct(p))));
  $("#prediction").replaceChildren(el("p", { class: "label" }, "Prediction: ", el("strong", { id: "predicted-label" }, prediction.label)),
    el("p", { class: "hint" }, whyThisAnswer(result, prediction)), el("table", {}, el("tbody", {}, ...rows)));
}

// Why the answer is what it is, in words: which cut-off an 'unknown' missed, and how familiar the input looks.
function whyThisAnswer(result, prediction) {
  const familiar = prediction.familiarity === null || prediction.familiarity === undefined ? ""
    : `familiarity ${prediction.familiarity.toFixed(2)}: more familiar than about ${Math.round(100 * prediction.familiarity)}% of the training examples were when held out`;
  if (prediction.unknown_because === "unfamiliar") {
    return `this looks like none of the classes seen in training (${familiar}; the model's floor is ${result.familiarity_floor.toFixed(2)})`;
  }
  if (prediction.unknown_because === "below threshold") {
    return `no class reached probability ${shownCutOff(result.cut_off)}: the input may be of none of these classes`;
  }
  const parts = [];
  if (result.cut_off > 0) parts.push(`its probability is at least ${shownCutOff(result.cut_off)}`);
  if (familiar) parts.push(familiar);
  return parts.length ? `answered: ${parts.join("; ")}` : "";
}

// Ready-to-copy calls of the predict endpoint, with this server's real URL and a placeholder key.
const KEY_PLACEHOLDER = "YOUR_API_KEY";

function snippets(modality, url) {
  if (modality === "image") {
    return {
      curl: `curl -s -H "X-API-Key: ${KEY_PLACEHOLDER}" -F files=@photo.jpg \\\n     ${url}`,
      python: `import json
import os
import urllib.request
import uuid

URL = "${url}"
KEY = "${KEY_PLACEHOLDER}"  # from \`smalldata api-key create\`


def predict(path):
    """The label and class probabilities of one image file."""
    boundary = uuid.uuid4().hex
    with open(path, "rb") as file:
        data = file.read()
    head = (f"--{boundary}\\r\\nContent-Disposition: form-data; name=\\"files\\"; "
            f"filename=\\"{os.path.basename(path)}\\"\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n")
    body = head.encode() + data + f"\\r\\n--{boundary}--\\r\\n".encode()
    request = urllib.request.Request(URL, data=body, headers={
        "X-API-Key": KEY, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)["predictions"][0]


answer = predict("photo.jpg")
print(answer["label"], answer["probabilities"])
` };
  }
  return {
    curl: `curl -s -H "X-API-Key: ${KEY_PLACEHOLDER}" -H "Content-Type: application/json" \\\n     -d '{"texts": ["a text to classify"]}' ${url}`,
    python: `import json
import urllib.request

URL = "${url}"
KEY = "${KEY_PLACEHOLDER}"  # from \`smalldata api-key create\`


def predict(texts):
    """The label and class probabilities of each text."""
    request = urllib.request.Request(URL, data=json.dumps({"texts": texts}).encode(), headers={
        "X-API-Key": KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)["predictions"]


for answer in predict(["a text to classify"]):
    print(answer["label"], answer["probabilities"])
` };
}

function showSnippets() {
  const modality = state.project.modality;
  const code = snippets(modality, location.origin + predictPath(modality === "image" ? "images" : "texts"));
  $("#snippet-curl").textContent = code.curl;
  $("#snippet-python").textContent = code.python;
  $("#snippet-note").textContent = (state.keysNeeded
    ? `Put your API key in place of ${KEY_PLACEHOLDER}. `
    : `No key is needed from this machine until one is made (the placeholder is ignored till then); then put it in place of ${KEY_PLACEHOLDER}. `) +
    (modality === "image" ? "Send several files at once as more files= parts." : "Send several texts in one list.");
}

function copyButton(button) {
  button.addEventListener("click", () => guarded(async () => {
    const text = $(button.dataset.copy).textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch {  // no clipboard (a page not on https or localhost): select it for Ctrl+C
      getSelection().selectAllChildren($(button.dataset.copy));
      say("selected: press Ctrl+C (or Cmd+C) to copy", "hint");
      return;
    }
    say("copied", "note");
  }));
}

async function tryImage(event) {
  event.preventDefault();
  const file = $("#try-file").files[0];
  if (!file) throw new Error("choose an image first");
  const form = new FormData();
  form.append("files", file);
  const threshold = tryThreshold();
  const query = threshold === null ? "" : `?threshold=${threshold}`;
  showPrediction(await api(predictPath("images") + query, { method: "POST", body: form }));
  $("#prediction").prepend(el("img", { src: URL.createObjectURL(file), alt: "the image you sent", class: "tried" }));
}

async function tryText(event) {
  event.preventDefault();
  const threshold = tryThreshold();
  const body = threshold === null ? { texts: [$("#try-input").value] } : { texts: [$("#try-input").value], threshold };
  showPrediction(await api(predictPath("texts"), { method: "POST", json: body }));
}

// -------------------------------------------------------------------------------------- setup

async function route() {
  for (const id of ["#projects-view", "#project-view", "#model-view"]) $(id).hidden = true;
  clearInterval(state.polling);
  await guarded(async () => {
    if (state.mode === "model") {
      const model = await api("/api/model");
      state.project = { modality: model.modality };
      document.body.dataset.modality = model.modality;
      document.body.dataset.mode = "model";
      $("#model-view").hidden = false;
      $("#model-info").textContent = `A ${model.modality} model (${model.head} on ${model.features}) with classes: ${model.labels.join(", ")}.`;
      $("#project-view").hidden = false;
      $("#try").hidden = false;
      showSnippets();
      return;
    }
    if (state.keysNeeded && !storedKey()) { say(KEY_HINT, "hint"); return; }  // nothing to show or change yet
    const match = location.hash.match(/^#project-(\d+)$/);
    if (match) await showProject(Number(match[1]));
    else await showProjects();
  });
}

// ----------------------------------------------------------------------------------- camera

// Frames of the page's camera, added to the class typed above (as Teachable Machine does).
const camera = { stream: null, captured: 0 };

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia)
    throw new Error("this browser gives the page no camera here (a page must be on https or on this machine)");
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    throw new Error(`the camera could not be opened (${error.name}): allow the page to use it, or check that one is connected`);
  }
  $("#camera-video").srcObject = camera.stream;
  $("#camera").hidden = false;
  $("#camera-start").hidden = true;
}

function stopCamera() {
  if (camera.stream) for (const track of camera.stream.getTracks()) track.stop();
  camera.stream = null;
  $("#camera").hidden = true;
  $("#camera-start").hidden = false;
}

async function captureFrame() {
  const label = $("#image-label").value.trim();
  if (!label) throw new Error("type the class of what the camera shows first");
  const video = $("#camera-video");
  if (!camera.stream || !video.videoWidth) throw new Error("the camera has no picture yet: wait a moment and capture again");
  const canvas = el("canvas", { width: video.videoWidth, height: video.videoHeight });
  canvas.getContext("2d").drawImage(video, 0, 0);
  const frame = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  if (!frame) throw new Error("the frame could not be turned into an image: capture again");
  const form = new FormData();
  form.append("label", label);
  form.append("files", frame, `camera-${Date.now()}.jpg`);
  const result = await api(`/api/projects/${state.project.id}/examples/images`, { method: "POST", body: form });
  camera.captured += result.added.length;
  $("#camera-count").textContent = `${camera.captured} frame${camera.captured === 1 ? "" : "s"} added`;
  await showProject(state.project.id);
  showRejected(result);
}

function setupDrop() {
  const zone = $("#drop");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    // Entries are only to be had during the event; their files can be read afterwards.
    const entries = Array.from(e.dataTransfer.items || []).map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
    if (entries.some((entry) => entry.isDirectory)) {
      guarded(async () => uploadFolders(await filesUnder(entries)));
      return;
    }
    dropped = Array.from(e.dataTransfer.files);
    zone.firstChild.textContent = `${dropped.length} image(s) ready; `;
  });
  $("#folder-files").addEventListener("change", () => guarded(async () => {
    const files = Array.from($("#folder-files").files);
    $("#folder-files").value = "";
    await uploadFolders(files.map((file) => ({ file, path: file.webkitRelativePath || file.name })));
  }));
  $("#image-files").addEventListener("change", () => {
    dropped = [];
    zone.firstChild.textContent = `${$("#image-files").files.length} image(s) chosen; `;
  });
}

// Where the server needs no key (it listens on this machine only and no key has been made), the
// key form gives way to a sentence saying so.
function showKeyForm() {
  const local = !state.keysNeeded && !storedKey();
  for (const part of $("#key-form").querySelectorAll("label, input, button")) part.hidden = local;
  $("#key-state").textContent = local
    ? "No API key needed: this server answers only this machine and no key has been made yet (once one is, with `smalldata api-key create`, every request needs one)."
    : storedKey() ? "key set" : "no key: enter one to see and change your projects";
  $("#key-state").className = local ? "open" : "";
}

document.addEventListener("DOMContentLoaded", async () => {
  const keyInput = $("#api-key");
  keyInput.value = storedKey();
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("smalldata-key", keyInput.value.trim());
    showKeyForm();
    guarded(route);  // what the page shows depends on whose key it is
  });
  const bind = (selector, handler) => $(selector).addEventListener("submit", (e) => { e.preventDefault(); guarded(() => handler(e)); });
  bind("#new-project", createProject);
  bind("#add-images", addImages);
  bind("#add-zip", (e) => addFile(e, "#zip-file", "zip"));
  bind("#add-csv", (e) => addFile(e, "#csv-file", "csv"));
  bind("#add-text", addText);
  bind("#budget-form", saveBudget);
  $("#camera-start").addEventListener("click", () => guarded(startCamera));
  $("#camera-stop").addEventListener("click", stopCamera);
  $("#camera-capture").addEventListener("click", () => guarded(captureFrame));
  window.addEventListener("hashchange", stopCamera);  // leaving the project turns the camera off
  bind("#add-unlabeled", addUnlabeled);
  bind("#try-image", tryImage);
  bind("#try-text", tryText);
  $("#train").addEventListener("click", () => guarded(train));
  for (const button of document.querySelectorAll("[data-copy]")) copyButton(button);
  setupDrop();
  try {
    const health = await api("/api/health");
    state.mode = health.mode;
    state.keysNeeded = health.keys_needed;
  } catch (error) { sayError(error); }
  showKeyForm();
  window.addEventListener("hashchange", route);
  await route();
});
