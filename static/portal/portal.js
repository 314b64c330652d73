/* imgprotect portal: a little plain JavaScript. Every page works without it; this adds
   drag-and-drop uploads with per-file progress, in-place check results, keyboard review
   and small conveniences. */
(function () {
  "use strict";

  function csrfToken() {
    // From the page, never the cookie: the CSRF cookie is HttpOnly (docs/security.md).
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    var meta = document.querySelector("meta[name=csrf-token]");
    return meta ? meta.getAttribute("content") : "";
  }

  /* Bars take their width from data-width (a percentage): the Content-Security-Policy forbids
     style attributes in the markup, not styles set from script. */
  function applyWidths(root) {
    root.querySelectorAll("[data-width]").forEach(function (node) {
      var pct = parseFloat(node.getAttribute("data-width"));
      node.style.width = Math.max(0, Math.min(100, isNaN(pct) ? 0 : pct)) + "%";
    });
  }

  function humanBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(0) + " KB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }

  function typing(event) {
    var t = event.target;
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }

  /* POST a FormData with upload progress; resolves with {status, body}. */
  function send(url, data, onProgress) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      if (onProgress) xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      });
      xhr.onload = function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
        resolve({ status: xhr.status, body: body });
      };
      xhr.onerror = function () { resolve({ status: 0, body: null }); };
      xhr.send(data);
    });
  }

  /* ---- confirmations -------------------------------------------------------------- */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches && form.matches("form[data-confirm]") && !window.confirm(form.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });

  /* ---- drag-and-drop upload, one request per file, 3 at a time ---------------------- */
  function setupUpload(zone) {
    var url = zone.getAttribute("data-upload");
    var maxBytes = parseInt(zone.getAttribute("data-max-bytes"), 10) || 0;
    var input = zone.querySelector("input[type=file]");
    var list = document.getElementById(zone.getAttribute("data-list"));
    var grid = document.getElementById(zone.getAttribute("data-grid"));
    var summary = document.getElementById(zone.getAttribute("data-summary"));
    var queue = [], running = 0, done = 0, failed = 0;

    function item(file) {
      var bar = el("span");
      var row = el("li", { class: "upload-item", "data-name": file.name }, [
        el("span", { class: "name", text: file.name, title: file.name }),
        el("span", { class: "state", text: humanBytes(file.size) + " · waiting" }),
        el("div", { class: "progress", role: "progressbar", "aria-label": "Upload of " + file.name }, [bar]),
      ]);
      list.appendChild(row);
      return {
        row: row,
        progress: function (f) { bar.style.width = Math.round(f * 100) + "%"; row.querySelector(".state").textContent = Math.round(f * 100) + " %"; },
        ok: function (result) {
          row.classList.add("is-done");
          bar.style.width = "100%";
          row.querySelector(".state").textContent = "Protected";
          (result && result.flags || []).forEach(function (flag) {  // why copies may go unfound
            row.appendChild(el("div", { class: "message", text: flag.reason }));
          });
          if (grid && result) addThumb(result);
        },
        error: function (message) {
          row.classList.add("is-error");
          bar.style.width = "100%";
          row.querySelector(".state").textContent = "Not added";
          row.appendChild(el("div", { class: "message", role: "alert", text: message }));
        },
      };
    }

    function addThumb(result) {
      var empty = document.getElementById("images-empty");
      if (empty) empty.hidden = true;
      grid.hidden = false;
      var a = el("a", { class: "thumb is-new", href: result.url }, [
        el("img", { src: result.thumb, alt: result.key, loading: "lazy" }),
        el("div", { class: "caption" }, [el("span", { class: "name", text: result.key }),
                                         el("span", { class: "badge " + (result.status === "indexed" ? "ok" : "info"), text: result.status })]),
      ]);
      grid.insertBefore(a, grid.firstChild);
    }

    function report() {
      if (!summary) return;
      summary.hidden = false;
      summary.textContent = done + " added" + (failed ? ", " + failed + " not added (see below)" : "") +
        (queue.length || running ? " · " + (queue.length + running) + " to go" : "");
    }

    function pump() {
      while (running < 3 && queue.length) {
        running += 1;
        (function (job) {
          if (maxBytes && job.file.size > maxBytes) {
            job.ui.error("Too large: " + humanBytes(job.file.size) + "; the limit is " + humanBytes(maxBytes) + ".");
            failed += 1; running -= 1; report(); pump();
            return;
          }
          var data = new FormData();
          data.append("file", job.file, job.file.name);
          send(url, data, job.ui.progress).then(function (res) {
            var result = res.body && res.body.results && res.body.results[0];
            if (res.status === 201 && result && result.ok) { job.ui.ok(result); done += 1; }
            else if (result && result.message) { job.ui.error(result.message); failed += 1; }
            else if (res.status === 403) { job.ui.error("Your role does not allow uploads."); failed += 1; }
            else if (res.status === 413) { job.ui.error("Too large for the server."); failed += 1; }
            else { job.ui.error("The upload failed (" + (res.status || "network error") + "). Try again."); failed += 1; }
            running -= 1; report(); pump();
          });
        })(queue.shift());
      }
      report();
    }

    function add(files) {
      Array.prototype.forEach.call(files, function (file) { queue.push({ file: file, ui: item(file) }); });
      pump();
    }

    zone.addEventListener("click", function (e) { if (e.target !== input) input.click(); });
    zone.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
    input.addEventListener("change", function () { add(input.files); input.value = ""; });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("is-over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("is-over"); });
    });
    zone.addEventListener("drop", function (e) { if (e.dataTransfer && e.dataTransfer.files) add(e.dataTransfer.files); });
  }

  /* ---- checks: upload, then show the verdict in place -------------------------------------- */
  function poll(target, url, attempt) {
    fetch(url, { headers: { "X-Requested-With": "XMLHttpRequest" }, credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        target.innerHTML = html;
        applyWidths(target);
        var root = target.querySelector("[data-finished]");
        if (root && root.getAttribute("data-finished") === "false" && attempt < 600) {
          setTimeout(function () { poll(target, url, attempt + 1); }, Math.min(2000, 400 + attempt * 100));
        }
      });
  }

  function setupCheckForm(form) {
    var target = document.getElementById(form.getAttribute("data-result"));
    var status = form.querySelector("[data-status]");
    var button = form.querySelector("button[type=submit]");
    var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10) || 0;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var file = form.querySelector("input[type=file]").files[0];
      if (!file) { status.textContent = "Choose an image first."; return; }
      if (maxBytes && file.size > maxBytes) {
        status.textContent = "Too large: " + humanBytes(file.size) + "; the limit is " + humanBytes(maxBytes) + ".";
        status.className = "error"; return;
      }
      button.disabled = true;
      status.className = "muted";
      status.textContent = "Uploading…";
      send(form.action, new FormData(form), function (f) { status.textContent = "Uploading… " + Math.round(f * 100) + " %"; })
        .then(function (res) {
          button.disabled = false;
          if (res.status === 201 && res.body && res.body.url) {
            status.textContent = "";
            target.hidden = false;
            target.innerHTML = '<div class="card card-body"><span class="spinner"></span> Matching…</div>';
            history.replaceState(null, "", res.body.url);
            poll(target, res.body.url + "?partial=1", 0);
          } else {
            status.className = "error";
            status.textContent = (res.body && res.body.message) || "The check could not be submitted (" + res.status + ").";
          }
        });
    });
  }

  /* ---- review desk: j/k move, x select, c/d/l decide, o open --------------------------------- */
  function setupDesk(form) {
    var rows = Array.prototype.slice.call(form.querySelectorAll("tr[data-id]"));
    var current = rows.length ? 0 : -1;
    var decision = form.querySelector("input[name=decision]");
    var counter = form.querySelector("[data-selected-count]");
    var all = form.querySelector("[data-select-all]");
    var dialog = document.getElementById("licence-dialog");

    function boxes() { return rows.map(function (r) { return r.querySelector("input[name=ids]"); }); }
    function selected() { return boxes().filter(function (b) { return b.checked; }); }
    function refresh() {
      rows.forEach(function (r, i) {
        r.classList.toggle("is-current", i === current);
        r.classList.toggle("is-selected", r.querySelector("input[name=ids]").checked);
      });
      var n = selected().length;
      if (counter) counter.textContent = n ? n + " selected" : "No selection — actions apply to the highlighted row";
    }
    function move(delta) {
      if (!rows.length) return;
      current = Math.max(0, Math.min(rows.length - 1, current + delta));
      refresh();
      rows[current].scrollIntoView({ block: "nearest" });
    }
    function act(value) {
      if (!rows.length) return;
      if (!selected().length && current >= 0) rows[current].querySelector("input[name=ids]").checked = true;
      if (!selected().length) return;
      if (value === "license" && dialog) {
        dialog.showModal();
        var holder = dialog.querySelector("input[name=dialog_holder]");
        if (holder) holder.focus();
        return;
      }
      decision.value = value;
      form.submit();
    }
    form.addEventListener("change", function (e) {
      if (e.target === all) boxes().forEach(function (b) { b.checked = all.checked; });
      refresh();
    });
    rows.forEach(function (r, i) {
      r.addEventListener("click", function (e) {
        if (e.target.closest("a, input, button")) return;
        current = i; refresh();
      });
    });
    form.querySelectorAll("button[data-decision]").forEach(function (b) {
      b.addEventListener("click", function (e) { e.preventDefault(); act(b.getAttribute("data-decision")); });
    });
    if (dialog) {
      dialog.querySelector("form").addEventListener("submit", function (e) {
        e.preventDefault();
        var holder = dialog.querySelector("input[name=dialog_holder]").value.trim();
        if (!holder) { dialog.querySelector("[data-dialog-error]").hidden = false; return; }
        form.querySelector("input[name=holder]").value = holder;
        form.querySelector("input[name=source]").value = dialog.querySelector("input[name=dialog_source]").value.trim();
        decision.value = "license";
        dialog.close();
        form.submit();
      });
      dialog.querySelector("[data-dialog-cancel]").addEventListener("click", function () { dialog.close(); });
    }
    document.addEventListener("keydown", function (e) {
      if (typing(e) || e.metaKey || e.ctrlKey || e.altKey || (dialog && dialog.open)) return;
      var k = e.key;
      if (k === "j" || k === "ArrowDown") { e.preventDefault(); move(1); }
      else if (k === "k" || k === "ArrowUp") { e.preventDefault(); move(-1); }
      else if (k === "x" && current >= 0) {
        e.preventDefault();
        var box = rows[current].querySelector("input[name=ids]"); box.checked = !box.checked; refresh();
      }
      // preventDefault: the key must not also be typed into the field the action focuses (the licence dialog)
      else if (k === "c") { e.preventDefault(); act("confirm"); }
      else if (k === "d") { e.preventDefault(); act("dismiss"); }
      else if (k === "l") { e.preventDefault(); act("license"); }
      else if ((k === "o" || k === "Enter") && current >= 0) {
        var link = rows[current].querySelector("a[data-open]"); if (link) window.location = link.href;
      }
      else if (k === "/") { var q = document.querySelector("input[name=q]"); if (q) { e.preventDefault(); q.focus(); } }
    });
    refresh();
  }

  /* ---- single-page shortcuts (match page): keys declared with data-shortcut ------------------------ */
  function setupKeys() {
    var targets = document.querySelectorAll("[data-shortcut]");
    if (!targets.length) return;
    document.addEventListener("keydown", function (e) {
      if (typing(e) || e.metaKey || e.ctrlKey || e.altKey) return;
      var target = document.querySelector('[data-shortcut="' + e.key + '"]');
      if (!target) return;
      e.preventDefault();
      if (target.tagName === "DETAILS") { target.open = true; var f = target.querySelector("input"); if (f) f.focus(); }
      else target.click();
    });
  }

  /* ---- copy and reveal ------------------------------------------------------------------------- */
  function setupCopy(button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      var text = source ? (source.getAttribute("data-secret") || source.textContent).trim() : "";
      if (navigator.clipboard && text) {
        navigator.clipboard.writeText(text).then(function () {
          var old = button.textContent; button.textContent = "Copied"; setTimeout(function () { button.textContent = old; }, 1500);
        });
      }
    });
  }
  function setupReveal(button) {
    button.addEventListener("click", function () {
      var target = document.getElementById(button.getAttribute("data-reveal"));
      if (!target) return;
      var shown = target.getAttribute("data-shown") === "true";
      target.textContent = shown ? "•".repeat(24) : target.getAttribute("data-secret");
      target.setAttribute("data-shown", shown ? "false" : "true");
      button.textContent = shown ? "Reveal" : "Hide";
    });
  }

  /* ---- bulk job progress (see matching/portal/bulk.py) ------------------------------------------- */
  function setupJob(node) {
    var url = node.getAttribute("data-job-progress");
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (job) {
          if (!job) return;
          var pct = job.total ? Math.round(100 * job.done / job.total) : 0;
          node.querySelector(".progress > span").style.width = pct + "%";
          node.querySelector("[data-job-text]").textContent = job.done + " / " + (job.total || "?") +
            (job.failed ? " · " + job.failed + " failed" : "") + " · " + job.status;
          if (job.status === "running" || job.status === "queued" || job.status === "loading") setTimeout(tick, 2000);
        });
    }
    tick();
  }

  /* ---- live-refresh a pending check ---------------------------------------------------------------- */
  function setupPending(node) {
    poll(node, node.getAttribute("data-poll"), 0);
  }

  document.addEventListener("DOMContentLoaded", function () {
    applyWidths(document);
    // Selects that submit their form on change (no inline handlers under the CSP).
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
    document.querySelectorAll("[data-upload]").forEach(setupUpload);
    document.querySelectorAll("form[data-check-form]").forEach(setupCheckForm);
    document.querySelectorAll("form[data-desk]").forEach(setupDesk);
    document.querySelectorAll("[data-copy]").forEach(setupCopy);
    document.querySelectorAll("[data-reveal]").forEach(setupReveal);
    document.querySelectorAll("[data-job-progress]").forEach(setupJob);
    document.querySelectorAll("[data-poll]").forEach(setupPending);
    setupKeys();
  });
})();
