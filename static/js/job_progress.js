/* Follow a training job live without reloading the page: poll the JSON API every second while
 * the job is queued or running, and update the status badge, progress bar (epoch, step, ETA),
 * cancel/retry buttons, log tail, metrics table and the loss/accuracy charts (inline SVG drawn
 * here, no library). When the job settles, the results card is swapped in from a fresh render
 * of this page (fetched, not navigated to).
 *
 * Markup: #job[data-job-url] with the ids used below, and the job's JSON in
 * <script id="job-data" type="application/json">. window.__mh_pageLoads counts the loads of
 * this job's page in this tab (sessionStorage), so tests can tell that nothing reloaded.
 * Separate from status_poll.js, which reloads the page when a status settles.
 */
(function () {
  "use strict";
  var root = document.getElementById("job");
  var dataNode = document.getElementById("job-data");
  if (!root || !dataNode) return;

  var PENDING = ["queued", "running"];
  var INTERVAL_MS = 1000;
  var SVG_NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#4f46e5", "#f79009", "#12b76a", "#f04438", "#0ba5ec", "#7a5af8", "#ee46bc", "#667085"];
  var W = 360, H = 200, M = { left: 46, right: 10, top: 10, bottom: 28 };

  var job = JSON.parse(dataNode.textContent);
  var url = root.getAttribute("data-job-url");
  var drawnKey = null;

  try {
    var loadsKey = "mh_page_loads_job_" + job.id;
    var loads = Number(window.sessionStorage.getItem(loadsKey) || 0) + 1;
    window.sessionStorage.setItem(loadsKey, String(loads));
    window.__mh_pageLoads = loads;
  } catch (e) { window.__mh_pageLoads = 1; }

  function byId(id) { return document.getElementById(id); }
  function isPending(status) { return PENDING.indexOf(status) >= 0; }

  function formatEta(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min " + (s % 60) + " s";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function formatNumber(value) {
    if (typeof value !== "number" || !isFinite(value)) return "—";
    var a = Math.abs(value);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? value.toExponential(2) : value.toFixed(4);
  }

  function percentDone(data) {
    if (data.status === "succeeded") return 100;
    var p = data.progress || {};
    var epochs = p.epochs || 0, steps = p.steps || 1;
    if (!epochs) return 0;
    var done = (p.epoch || 0) * steps + (p.step || 0);
    return Math.max(0, Math.min(100, Math.round((100 * done) / (epochs * steps))));
  }

  // --- status, progress, buttons, log ------------------------------------------------------

  function renderStatus(data) {
    var badge = byId("status-badge");
    badge.textContent = data.status;
    badge.className = "badge badge-" + data.status;
    root.setAttribute("data-job-status", data.status);
    var error = byId("job-error");
    error.textContent = data.error || "";
    error.hidden = !data.error;
    var pending = isPending(data.status);
    byId("cancel-form").hidden = !pending;
    byId("retry-form").hidden = !(data.status === "failed" || data.status === "cancelled");
    byId("job-cancelling").hidden = !(pending && data.cancel_requested);
    byId("live-note").hidden = !pending;
  }

  function renderProgress(data) {
    var p = data.progress || {};
    byId("job-epoch").textContent = (p.epoch || 0) + "/" + (p.epochs || "?");
    byId("job-step").textContent = (p.step || 0) + "/" + (p.steps || "?");
    byId("job-eta").textContent =
      data.status === "running" ? formatEta(p.eta_s) : data.status === "succeeded" ? "done" : "—";
    var pct = percentDone(data);
    byId("job-percent").textContent = pct + "%";
    byId("job-progress-bar").style.width = pct + "%";
    var bar = byId("job-progress");
    bar.setAttribute("aria-valuenow", String(pct));
    bar.className = "progress progress-lg progress-" + data.status;
  }

  function formatTime(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) return "—";
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  function renderTimes(data) {
    var started = byId("job-started");
    if (started && data.started_at && started.textContent.trim() === "—") started.textContent = formatTime(data.started_at);
  }

  function renderLog(data) {
    var pre = byId("job-log");
    var text = data.log || "(no output yet)";
    if (pre.textContent === text) return;
    var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.textContent = text;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  // --- metrics table -------------------------------------------------------------------------

  function metricKeys(metrics) {
    var keys = [];
    metrics.forEach(function (entry) {
      Object.keys(entry).forEach(function (key) {
        if (key !== "epoch" && typeof entry[key] === "number" && keys.indexOf(key) < 0) keys.push(key);
      });
    });
    // Training metrics first, then their validation counterparts.
    return keys.sort(function (a, b) {
      var va = a.indexOf("val_") === 0, vb = b.indexOf("val_") === 0;
      return va === vb ? 0 : va ? 1 : -1;
    });
  }

  function cell(tag, text, className) {
    var node = document.createElement(tag);
    node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function renderTable(metrics) {
    var table = byId("metrics-table");
    var keys = metricKeys(metrics);
    var hasPhase = metrics.some(function (m) { return m.phase; });
    var head = document.createElement("tr");
    head.appendChild(cell("th", "Epoch"));
    if (hasPhase) head.appendChild(cell("th", "Phase"));
    keys.forEach(function (key) { head.appendChild(cell("th", key.replace(/_/g, " "), "num")); });
    var body = document.createDocumentFragment();
    metrics.forEach(function (entry, index) {
      var row = document.createElement("tr");
      row.appendChild(cell("td", String(entry.epoch || index + 1)));
      if (hasPhase) row.appendChild(cell("td", entry.phase || ""));
      keys.forEach(function (key) { row.appendChild(cell("td", formatNumber(entry[key]), "num mono")); });
      body.appendChild(row);
    });
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(body);
    table.hidden = metrics.length === 0;
    byId("metrics-empty").hidden = metrics.length > 0;
  }

  // --- charts --------------------------------------------------------------------------------

  function svg(tag, attrs, parent) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function seriesFor(metrics, pattern) {
    return metricKeys(metrics)
      .filter(function (key) { return pattern.test(key); })
      .map(function (key) {
        return {
          key: key,
          base: key.replace(/^val_/, ""),
          validation: key.indexOf("val_") === 0,
          points: metrics
            .map(function (m, i) { return [m.epoch || i + 1, m[key]]; })
            .filter(function (p) { return typeof p[1] === "number" && isFinite(p[1]); }),
        };
      })
      .filter(function (s) { return s.points.length > 0; });
  }

  function niceTicks(min, max, count) {
    var span = max - min || 1;
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    [1, 2, 2.5, 5, 10].some(function (f) {
      if (span / (step * f) <= count) { step *= f; return true; }
      return false;
    });
    var ticks = [];
    for (var v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
    return ticks;
  }

  function drawChart(target, legend, series, metrics, options) {
    target.replaceChildren();
    legend.replaceChildren();
    if (!series.length) return;
    var epochs = Math.max(2, options.epochs || 0);
    series.forEach(function (s) { s.points.forEach(function (p) { epochs = Math.max(epochs, p[0]); }); });
    var values = [];
    series.forEach(function (s) { s.points.forEach(function (p) { values.push(p[1]); }); });
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (options.unit && lo >= 0 && hi <= 1) { lo = 0; hi = 1; }
    else { var pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1; lo = Math.max(options.floor === 0 && lo >= 0 ? 0 : -Infinity, lo - pad); hi += pad; }
    var x = function (epoch) { return M.left + ((epoch - 1) / (epochs - 1)) * (W - M.left - M.right); };
    var y = function (value) { return H - M.bottom - ((value - lo) / (hi - lo)) * (H - M.top - M.bottom); };

    var grid = svg("g", { class: "chart-grid" }, target);
    niceTicks(lo, hi, 4).forEach(function (tick) {
      svg("line", { x1: M.left, x2: W - M.right, y1: y(tick), y2: y(tick) }, grid);
      svg("text", { x: M.left - 6, y: y(tick) + 3, "text-anchor": "end" }, grid).textContent = formatTick(tick);
    });
    var every = Math.max(1, Math.ceil(epochs / 8));
    for (var e = 1; e <= epochs; e += every) {
      svg("text", { x: x(e), y: H - M.bottom + 14, "text-anchor": "middle" }, grid).textContent = String(e);
    }
    svg("text", { x: (M.left + W - M.right) / 2, y: H - 2, "text-anchor": "middle", class: "chart-axis" }, grid).textContent = "epoch";
    svg("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "chart-baseline" }, grid);

    // Phase changes (fine-tuning: warm-up, then fine-tune) as dashed vertical lines.
    metrics.forEach(function (m, i) {
      if (i > 0 && m.phase && metrics[i - 1].phase && m.phase !== metrics[i - 1].phase) {
        var at = x((metrics[i - 1].epoch || i) + 0.5);
        svg("line", { x1: at, x2: at, y1: M.top, y2: H - M.bottom, class: "chart-phase" }, grid);
        svg("text", { x: at + 4, y: M.top + 10, class: "chart-phase-label" }, grid).textContent = m.phase;
      }
    });

    var bases = [];
    series.forEach(function (s) { if (bases.indexOf(s.base) < 0) bases.push(s.base); });
    series.forEach(function (s) {
      var color = COLORS[bases.indexOf(s.base) % COLORS.length];
      var group = svg("g", { class: "series", "data-series": s.key }, target);
      svg("polyline", {
        points: s.points.map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" "),
        fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": s.validation ? "5 4" : "none",
        "stroke-linejoin": "round", "data-series": s.key,
      }, group);
      s.points.forEach(function (p) {
        var dot = svg("circle", { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.6, fill: s.validation ? "#fff" : color, stroke: color, "stroke-width": 1.5 }, group);
        svg("title", {}, dot).textContent = s.key + " @ epoch " + p[0] + ": " + formatNumber(p[1]);
      });
      var item = document.createElement("span");
      item.className = "legend-item" + (s.validation ? " legend-val" : "");
      var swatch = document.createElement("i");
      swatch.style.borderColor = color;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.key.replace(/_/g, " ")));
      legend.appendChild(item);
    });
  }

  function formatTick(value) {
    var a = Math.abs(value);
    if (a !== 0 && (a < 1e-3 || a >= 1e4)) return value.toExponential(0);
    return String(Number(value.toPrecision(3)));
  }

  function renderCharts(data) {
    var metrics = data.metrics || [];
    var epochs = (data.progress || {}).epochs || 0;
    var loss = seriesFor(metrics, /(^|_)loss$/);
    var accuracy = seriesFor(metrics, /(^|_)acc(uracy)?$/);
    drawChart(byId("chart-loss"), byId("legend-loss"), loss, metrics, { epochs: epochs, floor: 0 });
    drawChart(byId("chart-accuracy"), byId("legend-accuracy"), accuracy, metrics, { epochs: epochs, unit: true });
    byId("accuracy-figure").hidden = metrics.length > 0 && accuracy.length === 0;
    byId("curves-empty").hidden = metrics.length > 0;
  }

  // --- putting it together -------------------------------------------------------------------

  function render(data) {
    renderStatus(data);
    renderProgress(data);
    renderLog(data);
    renderTimes(data);
    var key = (data.metrics || []).length + "|" + ((data.progress || {}).epochs || 0);
    if (key !== drawnKey) {
      drawnKey = key;
      renderTable(data.metrics || []);
      renderCharts(data);
    }
  }

  function refreshResults() {
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["job-results", "job-started", "job-finished"].forEach(function (id) {
          var node = fresh.getElementById(id), old = byId(id);
          if (node && old) old.replaceWith(document.importNode(node, true));
        });
      })
      .catch(function () { /* the links appear on the next visit */ });
  }

  render(job);
  var log = byId("job-log");
  log.scrollTop = log.scrollHeight;
  if (!isPending(job.status)) return;

  var busy = false;
  var timer = window.setInterval(function () {
    if (busy) return;
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data || !data.status) return;
        job = data;
        render(data);
        if (!isPending(data.status)) {
          window.clearInterval(timer);
          refreshResults();
        }
      })
      .catch(function () { /* transient network error: try again on the next tick */ })
      .then(function () { busy = false; });
  }, INTERVAL_MS);
})();
