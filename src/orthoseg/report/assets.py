"""The report page's inline style sheet and script (no external file, no library; works offline).

The script reads the per-image records from the ``<script type="application/json" id="image-records">``
block and builds table rows (and their images) only for the page on view, 50 at a time. It reports what
it did on ``<body>`` for people and tests alike: ``data-js="ready"``, ``data-page``, ``data-page-count``,
``data-images-expected``, ``data-images-loaded`` / ``data-images-failed`` (the current page's images),
and ``data-attention-images-loaded`` / ``-failed`` (thumbnails in the attention list).
"""

from __future__ import annotations

PAGE_SIZE = 50
"""Images per page of the image list."""

STYLE = """
[hidden] { display: none !important; }
:root { --bad: #b3261e; --ok: #1b7f3b; --line: #d5d9de; --head: #f1f3f5; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; }
header { background: #1f3b5c; color: #fff; padding: 0.8rem 1.5rem; }
header h1 { margin: 0; font-size: 1.35rem; }
header nav a { color: #cfe0f5; margin-right: 1rem; font-size: 0.85rem; }
main { padding: 0.5rem 1.5rem 2rem; }
h2 { font-size: 1.1rem; margin-top: 1.8rem; border-bottom: 2px solid var(--line); padding-bottom: 0.2rem; }
table { border-collapse: collapse; font-size: 0.82rem; }
th, td { border: 1px solid var(--line); padding: 0.25rem 0.45rem; text-align: left; vertical-align: top; }
th { background: var(--head); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th { font-weight: 600; width: 13rem; }
img.thumb { max-width: 200px; max-height: 200px; display: block; background: #000; }
img.mini { max-width: 96px; max-height: 96px; display: block; background: #000; }
.uid { font-family: ui-monospace, monospace; font-size: 0.72rem; word-break: break-all; max-width: 14rem; }
.bad, .flag-bad { color: var(--bad); font-weight: 600; } .ok, .flag-ok { color: var(--ok); }
.badge { display: inline-block; padding: 0 0.35rem; border-radius: 0.6rem; font-size: 0.75rem; }
.badge.bad { background: #fde7e5; } .badge.ok { background: #e3f4e7; }
.note { color: #57606a; font-size: 0.75rem; }
ul.reasons { margin: 0; padding-left: 1rem; color: var(--bad); }
tr.attn td:first-child { box-shadow: inset 4px 0 0 var(--bad); }
tr.highlight td { background: #fff6d6; }
.controls { display: flex; flex-wrap: wrap; gap: 0.6rem; align-items: center; margin: 0.6rem 0; }
.controls { font-size: 0.85rem; }
.controls input[type=search] { width: 18rem; }
.pager button { min-width: 4.5rem; } .pager input { width: 3.5rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
.charts figure { margin: 0; border: 1px solid var(--line); padding: 0.3rem; background: #fff; }
svg.chart text { font-size: 10px; fill: #333; } svg.chart .chart-title { font-size: 12px; font-weight: 600; }
.disclaimer { color: #57606a; font-size: 0.8rem; }
"""

SCRIPT = """
(function () {
  "use strict";
  var PAGE_SIZE = __PAGE_SIZE__;
  var body = document.body;
  var source = document.getElementById("image-records");
  var records = source ? JSON.parse(source.textContent) : [];
  var byUid = {};
  records.forEach(function (r) { byUid[r.uid] = r; });
  var hasConfidence = records.some(function (r) { return r.confidence !== null; });
  var state = { rows: records, page: 0, generation: 0 };
  var rowsBody = document.getElementById("image-rows");
  var filterBox = document.getElementById("image-filter");
  var implantSelect = document.getElementById("implant-filter");
  var attentionOnly = document.getElementById("attention-only");

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function fmt(value) {
    if (value === null || value === undefined) { return ""; }
    return typeof value === "number" ? value.toFixed(1) : String(value);
  }
  function bump(name) { body.dataset[name] = String(Number(body.dataset[name] || 0) + 1); }
  function badge(text, good) { return el("span", "badge " + (good ? "ok" : "bad"), text); }

  function image(r, cls, counter, generation, lazy) {
    if (!r.img) { return el("span", "note", "no overlay"); }
    var img = el("img", cls);
    img.alt = "overlay " + r.uid;
    img.decoding = "async";
    if (lazy) { img.loading = "lazy"; }
    function current() { return generation === null || generation === state.generation; }
    img.onload = function () { if (current()) { bump(counter + "Loaded"); } };
    img.onerror = function () { if (current()) { bump(counter + "Failed"); } };
    img.src = r.img;
    if (!r.href) { return img; }
    var link = el("a");
    link.href = r.href;
    link.target = "_blank";
    link.rel = "noopener";
    link.appendChild(img);
    return link;
  }
  function lines(cell, pairs, unit, out) {
    pairs.forEach(function (pair) {
      var bad = out && out.indexOf(pair[0]) >= 0;
      cell.appendChild(el("div", bad ? "bad" : "", pair[0] + " " + fmt(pair[1]) + unit));
    });
  }
  function row(r, generation) {
    var tr = el("tr", r.attention.length ? "attn" : "");
    tr.id = "img-" + r.uid;
    var cell = el("td");
    cell.appendChild(image(r, "thumb", "images", generation, false));
    tr.appendChild(cell);
    cell = el("td");
    cell.appendChild(el("div", "uid", r.uid));
    cell.appendChild(el("div", "", [r.view, r.side].filter(Boolean).join(" · ")));
    if (r.attention.length) {
      var list = el("ul", "reasons");
      r.attention.forEach(function (text) { list.appendChild(el("li", "", text)); });
      cell.appendChild(list);
    }
    if (r.areas.length) {
      var areas = r.areas.map(function (p) { return p[0] + " " + fmt(p[1]); }).join(", ");
      cell.appendChild(el("div", "note", "mm²: " + areas));
    }
    tr.appendChild(cell);
    cell = el("td");
    cell.appendChild(el("div", "", r.implant || ""));
    cell.appendChild(el("div", "note", r.fixation || ""));
    tr.appendChild(cell);
    cell = el("td", "num"); lines(cell, r.angles, "°", r.out); tr.appendChild(cell);
    cell = el("td", "num"); lines(cell, r.gaps, " mm", null); tr.appendChild(cell);
    cell = el("td", "num"); lines(cell, r.zones, " mm", null);
    if (r.lineMax !== null) { cell.appendChild(el("div", "note", "max " + fmt(r.lineMax) + " mm")); }
    if (r.lineFlag) { cell.appendChild(badge(r.lineFlag, false)); }
    tr.appendChild(cell);
    cell = el("td");
    if (r.quality) { cell.appendChild(badge(r.quality, r.quality === "ok")); }
    if (r.notes) { cell.appendChild(el("div", "note", r.notes)); }
    if (r.measurementFlags) { cell.appendChild(el("div", "note", r.measurementFlags)); }
    tr.appendChild(cell);
    if (hasConfidence) {
      tr.appendChild(el("td", "num", r.confidence === null ? "" : r.confidence.toFixed(2)));
    }
    return tr;
  }

  function pageCount() { return Math.max(1, Math.ceil(state.rows.length / PAGE_SIZE)); }
  function render() {
    state.generation += 1;
    var generation = state.generation;
    var pages = pageCount();
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var shown = state.rows.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
    body.dataset.page = String(state.page + 1);
    body.dataset.pageCount = String(pages);
    body.dataset.imagesShown = String(shown.length);
    body.dataset.imagesExpected = String(shown.filter(function (r) { return r.img; }).length);
    body.dataset.imagesLoaded = "0";
    body.dataset.imagesFailed = "0";
    var fragment = document.createDocumentFragment();
    shown.forEach(function (r) { fragment.appendChild(row(r, generation)); });
    if (!shown.length) {
      var empty = el("tr"); var cell = el("td", "note", "No image matches the filter.");
      cell.colSpan = 9; empty.appendChild(cell); fragment.appendChild(empty);
    }
    rowsBody.replaceChildren(fragment);
    document.querySelectorAll(".pager").forEach(function (pager) {
      pager.querySelector("input").value = String(state.page + 1);
      pager.querySelector("input").max = String(pages);
      pager.querySelector(".page-count").textContent = String(pages);
      pager.querySelector(".match-count").textContent = String(state.rows.length);
      pager.querySelector(".prev").disabled = state.page === 0;
      pager.querySelector(".next").disabled = state.page >= pages - 1;
    });
  }
  function applyFilter() {
    var terms = filterBox.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var implant = implantSelect.value;
    var onlyAttention = attentionOnly.checked;
    state.rows = records.filter(function (r) {
      if (implant && r.implant !== implant) { return false; }
      if (onlyAttention && !r.attention.length) { return false; }
      var text = [r.uid, r.view, r.side, r.implant, r.fixation, r.lineFlag, r.quality, r.notes,
        r.attention.join(" "), r.attention.length ? "attention" : ""].join(" ").toLowerCase();
      return terms.every(function (term) { return text.indexOf(term) >= 0; });
    });
    state.page = 0;
    render();
  }
  function showImage(uid) {
    if (!byUid[uid]) { return; }
    filterBox.value = ""; implantSelect.value = ""; attentionOnly.checked = false;
    state.rows = records;
    state.page = Math.floor(records.indexOf(byUid[uid]) / PAGE_SIZE);
    render();
    var target = document.getElementById("img-" + uid);
    if (target) { target.classList.add("highlight"); target.scrollIntoView({ block: "center" }); }
  }

  document.querySelectorAll(".pager").forEach(function (pager) {
    pager.querySelector(".prev").addEventListener("click", function () { state.page -= 1; render(); });
    pager.querySelector(".next").addEventListener("click", function () { state.page += 1; render(); });
    pager.querySelector("input").addEventListener("change", function (event) {
      state.page = (parseInt(event.target.value, 10) || 1) - 1; render();
    });
  });
  filterBox.addEventListener("input", applyFilter);
  implantSelect.addEventListener("change", applyFilter);
  attentionOnly.addEventListener("change", applyFilter);
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.jump") : null;
    if (link) { event.preventDefault(); showImage(link.dataset.uid); }
  });
  if (hasConfidence) { document.getElementById("confidence-head").hidden = false; }
  body.dataset.attentionImagesLoaded = "0";
  body.dataset.attentionImagesFailed = "0";
  document.querySelectorAll("td.thumb-slot").forEach(function (slot) {
    var r = byUid[slot.dataset.uid];
    if (r) { slot.appendChild(image(r, "mini", "attentionImages", null, true)); }
  });
  document.querySelectorAll(".needs-js").forEach(function (node) { node.hidden = false; });
  render();
  if (location.hash.indexOf("#img-") === 0) { showImage(decodeURIComponent(location.hash.slice(5))); }
  body.dataset.js = "ready";
})();
""".replace("__PAGE_SIZE__", str(PAGE_SIZE))
