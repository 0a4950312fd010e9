// The tidings page: plain JavaScript over the HTTP API, no build step. Every API error is shown
// in #error as the API words it; a 401/403 asks for the key once and keeps it for the tab.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "tidings-api-key";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function askForKey() {
  const dialog = $("key-dialog");
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

class ApiError extends Error {}

// fetch + JSON + the API's error shape; `raw` keeps the Response (for headers).
async function api(path, body, raw) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers["Authorization"] = "Bearer " + key;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError("The server cannot be reached (" + e.message + ").");
  }
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (!resp.ok) {
    if (resp.status === 401 || resp.status === 403) askForKey();
    const why = data && data.error ? data.error : resp.status + " " + resp.statusText;
    throw new ApiError(why);
  }
  return raw ? { data, resp } : data;
}

// Runs an action; its error, if any, is shown instead of a blank page.
async function guarded(action) {
  showError("");
  try {
    await action();
  } catch (e) {
    showError(e instanceof ApiError ? e.message : "Something went wrong: " + e.message);
  }
}

// ---- tabs ----
const TABS = ["translate", "align", "live", "models"];
function selectTab(name) {
  for (const t of TABS) {
    const on = t === name;
    $("tab-" + t).setAttribute("aria-selected", on ? "true" : "false");
    $("panel-" + t).hidden = !on;
  }
  if (name === "live") guarded(loadLive);
  if (name === "models") guarded(loadModels);
}
for (const t of TABS) $("tab-" + t).addEventListener("click", () => selectTab(t));

// ---- the key ----
$("key-button").addEventListener("click", askForKey);
$("key-cancel").addEventListener("click", () => $("key-dialog").close());
$("key-form").addEventListener("submit", () => {
  sessionStorage.setItem(KEY, $("key-input").value.trim());
  showError("");
  guarded(loadLanguages);
});

// ---- sentence pairs: hovering or focusing one highlights its pair ----
function pairable(span) {
  const on = () => document.querySelectorAll('[data-pair="' + span.dataset.pair + '"]')
    .forEach((s) => s.classList.add("hl"));
  const off = () => document.querySelectorAll('[data-pair="' + span.dataset.pair + '"]')
    .forEach((s) => s.classList.remove("hl"));
  span.addEventListener("mouseenter", on);
  span.addEventListener("mouseleave", off);
  span.addEventListener("focus", on);
  span.addEventListener("blur", off);
  return span;
}

function sentence(text, pair, side) {
  return pairable(el("span", { class: "sentence", tabindex: "0", "data-pair": pair, "data-side": side }, text));
}

// ---- translate ----
$("translate-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(translate);
});

async function translate() {
  const paragraphs = $("source-text").value.split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean);
  if (!paragraphs.length) throw new ApiError("Type or paste some text first.");
  const started = performance.now();
  $("translate-meta").textContent = "Translating…";
  const { data, resp } = await api("/v1/translate", {
    texts: paragraphs,
    source: $("source-lang").value.trim() || "auto",
    beam: Number($("beam").value) || 1,
    return_sentences: true,
  }, true);
  const rows = $("pairs-body");
  rows.replaceChildren();
  const models = new Set();
  data.results.forEach((r, i) => {
    const lang = r.detected_language
      ? r.detected_language.code + (r.detected_language.reliable ? "" : "?")
      : r.source_language;
    if (r.model) models.add(r.model);
    const ps = el("p", { class: "source", "data-paragraph": i }, el("span", { class: "badge", title: "language" }, lang));
    const pt = el("p", { class: "english", "data-paragraph": i });
    (r.sentences || []).forEach((s, k) => {
      ps.append(sentence(s.source, i + "-" + k, "source"), " ");
      pt.append(sentence(s.translation, i + "-" + k, "english"), " ");
    });
    if (!r.sentences || !r.sentences.length) pt.append(r.text);
    rows.append(ps, pt);
  });
  $("translation").hidden = false;
  const wall = Math.round(performance.now() - started);
  const inference = resp.headers.get("x-inference-ms");
  $("translate-meta").textContent =
    (models.size ? "model " + [...models].join(", ") + " · " : "") + wall + " ms" +
    (inference ? " (" + Math.round(Number(inference)) + " ms in the model)" : "");
}

// ---- articles → events ----
let aligned = null; // { input: Map id -> article, result }

function parsePasted(text) {
  return text.split(/^\s*---\s*$/m).map((b) => b.trim()).filter(Boolean).map((block, i) => {
    const lines = block.split("\n");
    return { id: "pasted-" + (i + 1), title: lines[0].trim(), text: lines.slice(1).join("\n").trim() || lines[0] };
  });
}

async function readFiles(files) {
  const out = [];
  for (const f of files) {
    const text = await f.text();
    if (f.name.endsWith(".jsonl")) {
      text.split("\n").forEach((line, n) => {
        if (!line.trim()) return;
        try { out.push(JSON.parse(line)); }
        catch (_) { throw new ApiError(f.name + " line " + (n + 1) + " is not JSON."); }
      });
    } else {
      const lines = text.split("\n");
      out.push({ id: f.name.replace(/\.[^.]*$/, ""), title: lines[0].trim(), text: lines.slice(1).join("\n") });
    }
  }
  return out;
}

$("align-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(alignArticles);
});

async function alignArticles() {
  const articles = parsePasted($("articles-text").value).concat(await readFiles($("articles-files").files));
  if (!articles.length) throw new ApiError("Paste articles or choose files first.");
  $("align-result").hidden = true;
  $("article-view").hidden = true;
  const progress = $("align-progress");
  progress.hidden = false;
  progress.value = 0;
  $("align-stage").textContent = "Queued…";
  let job = await api("/v1/align/jobs", { articles });
  while (job.status === "queued" || job.status === "running") {
    await new Promise((r) => setTimeout(r, 300));
    job = await api("/v1/align/jobs/" + encodeURIComponent(job.id));
    progress.max = Math.max(job.total, 1);
    progress.value = job.done;
    $("align-stage").textContent = job.stage ? job.stage + " " + job.done + " / " + job.total : "Queued…";
  }
  progress.hidden = true;
  if (job.status === "failed") {
    $("align-stage").textContent = "";
    throw new ApiError(job.error ? job.error.error : "The job failed.");
  }
  $("align-stage").textContent = "Done: " + job.result.articles.length + " articles in " +
    job.result.events.length + " events in " + job.result.themes.length + " themes." + (job.notices.length ? " " + job.notices.join(" ") : "");
  aligned = { input: new Map(articles.map((a) => [a.id, a])), result: job.result };
  renderEvents(job.result);
  $("plot").innerHTML = job.plot_svg || "";
  $("align-result").hidden = false;
}

function renderEvents(result) {
  const langs = new Map(result.articles.map((a) => [a.id, a]));
  const themes = new Map(result.themes.map((t) => [t.id, t]));
  $("themes").replaceChildren(...result.themes.map((t) => {
    const facts = [t.events.length + (t.events.length === 1 ? " event" : " events") + ": " + t.events.join(", ")];
    if (t.keywords.length) facts.push("keywords: " + t.keywords.join(", "));
    if (t.shared_names.length) facts.push("names: " + t.shared_names.join(", "));
    return el("li", { "data-theme": t.id },
      el("div", { class: "event-title" }, t.id + ": " + t.title),
      el("div", { class: "meta" }, facts.join(" · ")));
  }));
  $("events").replaceChildren(...result.events.map((e) => {
    const facts = [];
    if (e.keywords.length) facts.push("keywords: " + e.keywords.join(", "));
    if (e.shared_names.length) facts.push("names: " + e.shared_names.join(", "));
    if (e.shared_numbers.length) facts.push("numbers: " + e.shared_numbers.join(", "));
    const members = el("ul", { class: "members" }, ...e.members.map((m) => {
      const a = langs.get(m.id);
      return el("li", { "data-article": m.id },
        el("button", { type: "button", onclick: () => guarded(() => openArticle(m.id)) }, m.id),
        " ", el("span", { class: "badge" }, a ? a.lang : "?"),
        " similarity " + m.similarity.toFixed(3) + (a ? " · " + a.title_en : ""));
    }));
    const theme = themes.get(e.theme);
    return el("li", { "data-event": e.id, "data-theme": e.theme },
      el("div", { class: "event-title" }, e.id + ": " + e.title,
        theme ? el("span", { class: "badge theme", title: "theme: " + theme.title }, e.theme) : ""),
      el("div", { class: "meta" }, facts.join(" · ")), members);
  }));
  $("skipped").replaceChildren(...result.skipped.map((s) => el("li", {}, s.id + " skipped: " + s.reason)));
}

async function openArticle(id) {
  const article = aligned.result.articles.find((a) => a.id === id);
  const input = aligned.input.get(id);
  const inspected = await api("/v1/inspect", input);
  $("article-title").textContent = article.title_en || article.title || id;
  $("article-meta").textContent = id + " · " + article.lang + " · " + article.models.join(", ");
  const rows = $("article-pairs");
  rows.replaceChildren();
  let para = -1, ps = null, pe = null;
  article.sentences.forEach((s, k) => {
    if (s.paragraph !== para) {
      para = s.paragraph;
      ps = el("p", { class: "source" });
      pe = el("p", { class: "english" });
      rows.append(ps, pe);
    }
    ps.append(sentence(s.source, "a-" + k, "source"), " ");
    pe.append(sentence(s.translation, "a-" + k, "english"), " ");
  });
  $("article-removed").tBodies[0].replaceChildren(...inspected.removed.map((r) =>
    el("tr", { class: "removed" }, el("td", {}, r.line), el("td", {}, r.text), el("td", {}, r.reason.replace(/_/g, " ")))));
  if (!inspected.removed.length) {
    $("article-removed").tBodies[0].append(el("tr", {}, el("td", { colspan: "3" }, "nothing was removed")));
  }
  $("article-view").hidden = false;
  $("article-close").focus();
}
$("article-close").addEventListener("click", () => { $("article-view").hidden = true; });

// ---- live events ----
let liveEvents = [];
async function loadLive() {
  const list = await api("/v1/events?limit=1000");
  liveEvents = list.events.slice().sort((a, b) => b.created_at - a.created_at || b.id - a.id);
  renderLive();
}

function renderLive() {
  const q = $("live-search").value.trim().toLowerCase();
  const shown = liveEvents.filter((e) => !q || (e.title || "").toLowerCase().includes(q));
  $("live-count").textContent = shown.length + " of " + liveEvents.length + " events, newest first";
  $("live-events").replaceChildren(...shown.map((e) => el("li", { "data-event": e.id },
    el("button", { type: "button", onclick: () => guarded(() => openLive(e.id)) }, e.title || "event " + e.id),
    " · " + e.size + " article" + (e.size === 1 ? "" : "s") + " · " + new Date(e.created_at * 1000).toLocaleString())));
}

async function openLive(id) {
  const e = await api("/v1/events/" + id);
  $("live-event-title").textContent = (e.title || "event " + id) + " (" + e.size + ")";
  $("live-event-members").replaceChildren(...e.members.map((m) => el("li", {},
    m.article_id + " · similarity " + m.similarity.toFixed(3) + " · " + new Date(m.added_at * 1000).toLocaleString())));
  $("live-event").hidden = false;
}
$("live-search").addEventListener("input", renderLive);
$("live-refresh").addEventListener("click", () => guarded(loadLive));

// ---- models ----
async function loadModels() {
  const m = await api("/v1/models");
  const rows = m.models.concat(m.fallback ? [m.fallback] : []);
  $("models-table").tBodies[0].replaceChildren(...rows.map((r) => el("tr", {},
    el("td", {}, r.languages.join(", ")), el("td", {}, r.id + (r.revision ? "@" + r.revision : "")),
    el("td", {}, r.license || "not stated"), el("td", {}, r.loaded ? "yes" : "no"))));
  $("embedding-model").textContent = "Embedding model: " + m.embedding_model.id +
    (m.embedding_model.loaded ? " (loaded)" : " (not loaded yet)");
  return m;
}

// The served languages, for the "From" suggestions.
async function loadLanguages() {
  const m = await api("/v1/models");
  const list = $("language-list");
  list.replaceChildren(el("option", { value: "auto" }, "detect"));
  for (const r of m.models) for (const l of r.languages) list.append(el("option", { value: l }, r.id));
}

guarded(loadLanguages);
