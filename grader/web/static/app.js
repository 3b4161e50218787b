// Plain JS, no build step: upload with progress, live submission status, table sort/filter.
"use strict";

function formatBytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1048576).toFixed(1) + " MiB";
}

function setupUpload() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("model-file");
  const zone = document.getElementById("dropzone");
  const nameEl = document.getElementById("file-name");
  const bar = document.getElementById("upload-progress");
  const msg = document.getElementById("upload-message");
  const button = document.getElementById("upload-button");
  const maxBytes = parseInt(form.dataset.maxBytes, 10);

  function say(text, isError) {
    msg.textContent = text;
    msg.className = isError ? "alert error" : "";
  }
  function checkFile() {
    const file = input.files[0];
    if (!file) { nameEl.textContent = ""; return false; }
    nameEl.textContent = file.name + " (" + formatBytes(file.size) + ")";
    if (file.size > maxBytes) {
      say("This file is " + formatBytes(file.size) + "; the limit is " + formatBytes(maxBytes) +
          ". Nothing was uploaded.", true);
      return false;
    }
    if (file.size === 0) { say("This file is empty.", true); return false; }
    say("", false);
    return true;
  }
  input.addEventListener("change", checkFile);
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (e) => {
    e.preventDefault(); zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, (e) => {
    e.preventDefault(); zone.classList.remove("over");
  }));
  zone.addEventListener("drop", (e) => {
    if (e.dataTransfer && e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      checkFile();
    }
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!checkFile()) { if (!input.files[0]) say("Choose a model file first.", true); return; }
    const data = new FormData();
    data.append("file", input.files[0]);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("action"));
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false; bar.value = 0; button.disabled = true;
    say("Uploading…", false);
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) bar.value = Math.round((100 * ev.loaded) / ev.total);
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = {}; }
      if (xhr.status === 202 && body.url) {
        bar.value = 100;
        say("Uploaded. Opening your submission…", false);
        window.location.assign(body.url);
      } else {
        button.disabled = false; bar.hidden = true;
        say(body.detail || ("Upload failed (HTTP " + xhr.status + ")."), true);
      }
    });
    xhr.addEventListener("error", () => {
      button.disabled = false; bar.hidden = true;
      say("The upload did not reach the server. Check your connection and try again.", true);
    });
    xhr.send(data);
  });
}

// The submission page follows its submission live: an EventSource on /submissions/{id}/events
// (the server pushes each change: the pre-flight verdict, the start, the result) and, where
// that stream is unavailable, conditional polling of /status with If-None-Match and backoff
// (slower while queued). Each change re-renders the result panel from the server.
const TERMINAL = ["PASSED", "FAILED", "ERROR"];

function setupLiveStatus() {
  const box = document.getElementById("result");
  if (!box || box.dataset.terminal === "true") return;
  const id = box.dataset.submission;
  const shownStatus = () => (document.getElementById("status") || {}).dataset;
  let finished = false;
  let pending = Promise.resolve();

  function refresh() {
    // One render at a time, in order, so a late answer never overwrites a newer one.
    pending = pending.then(async () => {
      try {
        const response = await fetch("/submissions/" + id + "/result",
          { headers: { Accept: "text/html" }, cache: "no-store" });
        if (response.ok) box.innerHTML = await response.text();
      } catch (err) { /* the next change or poll renders it */ }
    });
    return pending;
  }
  function finish() {
    finished = true;
    box.dataset.terminal = "true";
  }
  function rendered(sub) {
    const status = shownStatus();
    const preflight = document.getElementById("preflight");
    return status && status.status === sub.status &&
      (preflight ? preflight.dataset.preflight : null) === (sub.preflight ? sub.preflight.status : null);
  }

  function poll() {
    let etag = null;
    let delay = 1000;
    async function once() {
      let status = null;
      try {
        const headers = { Accept: "application/json" };
        if (etag) headers["If-None-Match"] = etag;
        const response = await fetch("/submissions/" + id + "/status", { headers, cache: "no-store" });
        if (response.status === 200) {
          const body = await response.json();
          status = body.status;
          if (etag !== null) delay = 1000;
          etag = response.headers.get("ETag");
          await refresh();
          if (body.terminal) { finish(); return; }
        } else if (response.status === 304) {
          status = (shownStatus() || {}).status;
        }
      } catch (err) { /* transient network error: keep polling, a little slower */ }
      const cap = status === "QUEUED" ? 15000 : 5000;
      delay = Math.min(delay * 1.5, cap);
      setTimeout(once, delay);
    }
    setTimeout(once, 500);
  }

  if (typeof EventSource === "undefined") { poll(); return; }
  const source = new EventSource("/submissions/" + id + "/events");
  let first = true;
  source.addEventListener("submission", (ev) => {
    let sub = null;
    try { sub = JSON.parse(ev.data); } catch (err) { return; }
    // The page was rendered a moment ago: skip the first event when it shows the same.
    if (!(first && rendered(sub))) refresh();
    first = false;
    if (TERMINAL.includes(sub.status)) finish();
  });
  source.addEventListener("end", () => {
    source.close();
    if (!finished) { finish(); refresh(); }
  });
  source.addEventListener("error", () => {
    // CONNECTING: the browser reconnects by itself. CLOSED: refused (429, 401) or gone.
    if (source.readyState === EventSource.CLOSED && !finished) poll();
  });
}

function setupTables() {
  document.querySelectorAll("input[data-filter-table]").forEach((input) => {
    const table = document.getElementById(input.dataset.filterTable);
    input.addEventListener("input", () => {
      const q = input.value.trim().toLowerCase();
      table.tBodies[0].querySelectorAll("tr").forEach((row) => {
        row.hidden = q !== "" && !row.textContent.toLowerCase().includes(q);
      });
    });
  });
  document.querySelectorAll("table.sortable th button[data-sort]").forEach((button) => {
    button.addEventListener("click", () => {
      const th = button.closest("th");
      const table = th.closest("table");
      const index = Array.from(th.parentNode.children).indexOf(th);
      const asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      const numeric = button.dataset.sort === "num";
      const key = (row) => {
        const cell = row.children[index];
        const raw = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
        return numeric ? parseFloat(raw) || 0 : raw.toLowerCase();
      };
      const rows = Array.from(table.tBodies[0].rows);
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach((row) => table.tBodies[0].appendChild(row));
    });
  });
}

function setupConfirm() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (e) => {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  });
}

function setupBackButtons() {
  // Shown only when there is a page to go back to (and scripts run: no inline handlers).
  document.querySelectorAll("[data-go-back]").forEach((button) => {
    if (window.history.length < 2) return;
    button.hidden = false;
    button.addEventListener("click", () => window.history.back());
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupUpload();
  setupBackButtons();
  setupLiveStatus();
  setupTables();
  setupConfirm();
});
