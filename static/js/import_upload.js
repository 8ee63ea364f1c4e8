/* Import form: send the selected files one at a time to POST /api/uploads/ with a progress
 * bar per file, then create the import from those uploads with POST /api/imports/ (JSON) and
 * open the import's page, where status_poll.js follows its status. One request per file
 * instead of one request holding every file.
 *
 * Markup: #import-uploader[data-team][data-uploads-url][data-imports-url]
 * [data-import-detail-url="/heads/imports/0/"] around the dashboard form, #upload-error and
 * #upload-table. Without JavaScript the form posts everything to the dashboard view as before.
 * Upload ids are remembered per file for the life of the page, so resubmitting after an error
 * (a typo in the tasks, say) does not send the bytes again. A 429 (the uploads rate limit) is
 * waited out as its Retry-After says and the file sent again. Session cookie + CSRF token, no
 * dependencies.
 */
(function () {
  "use strict";
  var root = document.getElementById("import-uploader");
  if (!root || !window.FormData || !window.XMLHttpRequest || !window.fetch) return;
  var form = root.querySelector("form");
  var fileInput = form && form.querySelector("input[type=file][name=files]");
  if (!fileInput) return;

  var table = document.getElementById("upload-table");
  var errorBox = document.getElementById("upload-error");
  var submit = form.querySelector("button[type=submit]");
  var submitLabel = submit.textContent;
  var csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var team = root.getAttribute("data-team");
  var staged = {}; // file key -> upload id
  var MAX_RATE_LIMIT_RETRIES = 10;
  var busy = false;
  // API field -> form field that shows its error.
  var FIELD_FOR = { uploads: "files", files: "files", tasks: "tasks", backbone_name: "backbone_name", feature_layer: "feature_layer", branches: "branches", min_shared_fraction: "min_shared_fraction" };

  function fileKey(file) { return [file.name, file.size, file.lastModified].join("\u0000"); }

  function apiMessage(body, status) {
    var error = body && body.error;
    if (error && error.message) return error;
    return { message: "The server answered " + status + ". Try again, or ask an admin to check the logs.", detail: null };
  }

  // --- messages --------------------------------------------------------------------------

  function clearErrors() {
    errorBox.hidden = true;
    errorBox.textContent = "";
    form.querySelectorAll("[data-js-error]").forEach(function (node) { node.remove(); });
    form.querySelectorAll(".field-error[data-js-marked]").forEach(function (node) {
      node.classList.remove("field-error");
      node.removeAttribute("data-js-marked");
    });
  }

  // Show the message above the form, and each field's own message under that field.
  function showError(error) {
    errorBox.textContent = error.message;
    errorBox.hidden = false;
    var detail = error.detail;
    if (!detail || typeof detail !== "object" || Array.isArray(detail)) return;
    Object.keys(detail).forEach(function (key) {
      var input = FIELD_FOR[key] && form.querySelector("[name=" + FIELD_FOR[key] + "]");
      var field = input && input.closest(".field");
      if (!field) return;
      var note = document.createElement("p");
      note.className = "error";
      note.setAttribute("data-js-error", "");
      note.textContent = [].concat(detail[key]).map(function (m) { return typeof m === "string" ? m : JSON.stringify(m); }).join(" ");
      field.appendChild(note);
      if (!field.classList.contains("field-error")) {
        field.classList.add("field-error");
        field.setAttribute("data-js-marked", "");
      }
    });
  }

  // --- one row and one request per file ------------------------------------------------------

  function addRow(file) {
    var row = document.createElement("tr");
    row.setAttribute("data-upload-file", file.name);
    var name = document.createElement("td");
    var code = document.createElement("code");
    code.textContent = file.name;
    name.appendChild(code);
    var state = document.createElement("div");
    state.className = "muted small";
    state.setAttribute("data-upload-state", "");
    state.textContent = "waiting";
    name.appendChild(state);
    var barCell = document.createElement("td");
    var bar = document.createElement("div");
    bar.className = "progress progress-queued";
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-label", "Upload of " + file.name);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", "0");
    bar.appendChild(document.createElement("span"));
    barCell.appendChild(bar);
    var percent = document.createElement("td");
    percent.className = "num mono";
    percent.setAttribute("data-upload-percent", "");
    percent.textContent = "0%";
    row.appendChild(name);
    row.appendChild(barCell);
    row.appendChild(percent);
    table.tBodies[0].appendChild(row);
    return row;
  }

  function setProgress(row, percent, status, text) {
    var bar = row.querySelector("[role=progressbar]");
    bar.setAttribute("aria-valuenow", String(percent));
    bar.className = "progress progress-" + status;
    bar.firstChild.style.width = percent + "%";
    row.querySelector("[data-upload-percent]").textContent = percent + "%";
    if (text) row.querySelector("[data-upload-state]").textContent = text;
  }

  // Seconds to wait after a 429: the server's Retry-After (seconds), else 2, at most 120.
  function retryAfterSeconds(header) {
    var seconds = parseInt(header || "", 10);
    return isNaN(seconds) || seconds < 1 ? 2 : Math.min(seconds, 120);
  }

  function uploadOne(file, row, attempt) {
    attempt = attempt || 0;
    var key = fileKey(file);
    if (staged[key]) {
      setProgress(row, 100, "succeeded", "already uploaded");
      return Promise.resolve(staged[key]);
    }
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", root.getAttribute("data-uploads-url"));
      xhr.responseType = "json";
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRFToken", csrfToken);
      xhr.upload.addEventListener("progress", function (event) {
        if (!event.lengthComputable || !event.total) return;
        // The last percent waits for the server's answer (stored and hashed).
        setProgress(row, Math.min(99, Math.floor((100 * event.loaded) / event.total)), "running", "uploading");
      });
      xhr.addEventListener("load", function () {
        var body = xhr.response;
        if (xhr.status === 201 && body && body.id) {
          staged[key] = body.id;
          setProgress(row, 100, "succeeded", body.deduplicated ? "already stored" : "uploaded");
          resolve(body.id);
        } else if (xhr.status === 429 && attempt < MAX_RATE_LIMIT_RETRIES) {
          // Over the uploads rate limit (MODELHUB_THROTTLE_UPLOADS): wait as told, then send it again.
          var wait = retryAfterSeconds(xhr.getResponseHeader("Retry-After"));
          setProgress(row, 0, "queued", "rate limited: sending again in " + wait + " s");
          window.setTimeout(function () { uploadOne(file, row, attempt + 1).then(resolve, reject); }, wait * 1000);
        } else {
          setProgress(row, 0, "failed", "failed");
          reject(apiMessage(body, xhr.status));
        }
      });
      xhr.addEventListener("error", function () {
        setProgress(row, 0, "failed", "failed");
        reject({ message: "The upload of " + file.name + " was interrupted (network error). Submit again to retry.", detail: null });
      });
      var data = new FormData();
      data.append("team", team);
      data.append("file", file, file.name);
      setProgress(row, 0, "running", "uploading");
      xhr.send(data);
    });
  }

  function uploadAll(files, rows) {
    var ids = [];
    return files.reduce(function (previous, file, index) {
      return previous.then(function () {
        submit.textContent = "Uploading " + (index + 1) + " of " + files.length + "\u2026";
        return uploadOne(file, rows[index]).then(function (id) { ids.push(id); });
      });
    }, Promise.resolve()).then(function () { return ids; });
  }

  // --- the import ---------------------------------------------------------------------------

  function parseTasks(raw) {
    raw = raw.trim();
    if (!raw) return null;
    if (raw.charAt(0) === "[") {
      var value;
      try { value = JSON.parse(raw); } catch (e) { value = null; }
      if (!Array.isArray(value)) {
        throw { message: 'Expected a JSON list such as ["cat", "dog"].', detail: { tasks: ['Expected a JSON list such as ["cat", "dog"].'] } };
      }
      return value;
    }
    return raw.split(",").map(function (item) { return item.trim(); }).filter(Boolean);
  }

  function createImport(uploadIds, tasks) {
    var payload = {
      team: team,
      backbone_name: form.querySelector("[name=backbone_name]").value.trim(),
      feature_layer: form.querySelector("[name=feature_layer]").value.trim(),
      branches: form.querySelector("[name=branches]").checked,
      uploads: uploadIds,
    };
    var fraction = form.querySelector("[name=min_shared_fraction]").value.trim();
    if (fraction) payload.min_shared_fraction = Number(fraction);
    if (tasks) payload.tasks = tasks;
    return fetch(root.getAttribute("data-imports-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify(payload),
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (body) {
        if (response.status === 202 && body && body.id) return body;
        throw apiMessage(body, response.status);
      });
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) return;
    clearErrors();
    var files = Array.prototype.slice.call(fileInput.files);
    var tasks;
    try {
      tasks = parseTasks(form.querySelector("[name=tasks]").value);
    } catch (error) {
      showError(error);
      return;
    }
    busy = true;
    submit.disabled = true;
    table.tBodies[0].replaceChildren();
    table.hidden = false;
    var rows = files.map(addRow);
    uploadAll(files, rows)
      .then(function (uploadIds) {
        submit.textContent = "Starting import\u2026";
        return createImport(uploadIds, tasks);
      })
      .then(function (modelImport) {
        var detail = root.getAttribute("data-import-detail-url").replace(/0\/$/, modelImport.id + "/");
        window.location.assign(detail);
      })
      .catch(function (error) {
        showError(error && error.message ? error : { message: String(error), detail: null });
        busy = false;
        submit.disabled = false;
        submit.textContent = submitLabel;
      });
  });
})();
