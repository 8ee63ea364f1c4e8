/* Assembly builder: reload on a new backbone, filter the head table, "select all" shown
 * heads, and keep the task_id table and the size estimate in step with the ticked heads.
 *
 * The server renders the rows in the order assemblies.services gives task ids (by task
 * slug, then version), so the task_id of a ticked head is its rank among ticked rows.
 * Sizes come from the rows' data-bytes (stored blob sizes). With very many approved heads the
 * server offers "the latest approved version of every task" (#id_all_latest) with its count and
 * byte sum, and lists one page of heads; while it is ticked, the row boxes are off and the
 * task_id table shows the server's rows. No dependencies.
 *
 * Trunk and branches (issue 10): a row whose head owns the top of the backbone carries its
 * branch (data-branch-after, -params, -bytes); the merged estimate adds the ticked heads'
 * branches to the trunk (the backbone, once) and the heads, and the branch table lists them.
 */
(function () {
  "use strict";
  var form = document.getElementById("builder");
  if (!form) return;
  var backboneSelect = form.querySelector("select[name=backbone]");
  var filter = document.getElementById("head-filter");
  var selectAll = document.getElementById("select-all");
  var rows = Array.prototype.slice.call(form.querySelectorAll("#head-table tbody tr"));
  var backboneBytes = Number(form.getAttribute("data-backbone-bytes")) || 0;
  var allLatest = document.getElementById("id_all_latest");
  var latestBody = document.getElementById("task-id-latest");
  var branchLatest = document.getElementById("branch-latest");

  function box(row) { return row.querySelector("input[name=heads]"); }
  function shown(row) { return !row.hidden; }

  function formatBytes(bytes) {
    if (bytes < 0) return "\u2212" + formatBytes(-bytes);
    if (bytes < 1024) return bytes + (bytes === 1 ? " byte" : " bytes");
    var units = ["KB", "MB", "GB", "TB"];
    var value = bytes / 1024;
    var unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return value.toFixed(1) + "\u00a0" + units[unit];
  }

  function cell(text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function update() {
    var latest = Boolean(allLatest && allLatest.checked);
    rows.forEach(function (row) { box(row).disabled = latest; });
    if (selectAll) selectAll.disabled = latest;
    var body = document.getElementById("task-id-ticked");
    body.hidden = latest;
    if (latestBody) latestBody.hidden = !latest;
    var ticked = latest ? [] : rows.filter(function (row) { return box(row).checked; });
    ticked.sort(function (a, b) { return Number(a.dataset.order) - Number(b.dataset.order); });
    body.textContent = "";
    var tasks = {};
    var duplicate = false;
    var headsBytes = latest ? Number(allLatest.dataset.headsBytes) || 0 : 0;
    var branchesBytes = latest ? Number(allLatest.dataset.branchesBytes) || 0 : 0;
    var numBranches = latest ? Number(allLatest.dataset.numBranches) || 0 : 0;
    var branchBody = document.getElementById("branch-ticked");
    branchBody.hidden = latest;
    if (branchLatest) branchLatest.hidden = !latest;
    branchBody.textContent = "";
    ticked.forEach(function (row, taskId) {
      var tr = document.createElement("tr");
      tr.appendChild(cell(String(taskId), "mono"));
      tr.appendChild(taskCell(row));
      tr.appendChild(cell(row.dataset.width || "\u2014", "num"));
      body.appendChild(tr);
      duplicate = duplicate || tasks[row.dataset.task] === true;
      tasks[row.dataset.task] = true;
      headsBytes += Number(row.dataset.bytes) || 0;
      if (row.dataset.branchBytes !== undefined) {
        numBranches += 1;
        branchesBytes += Number(row.dataset.branchBytes) || 0;
        branchBody.appendChild(branchRow(row));
      }
    });
    var count = latest ? Number(allLatest.dataset.numHeads) || 0 : ticked.length;
    var merged = backboneBytes + branchesBytes + headsBytes;
    var separate = count * backboneBytes + headsBytes;
    setBytes("merged", merged);
    setBytes("separate", separate);
    exact("branches", branchesBytes);
    exact("heads", headsBytes);
    exact("count", count);
    exact("saved", separate - merged);
    document.getElementById("branches-size").textContent = formatBytes(branchesBytes);
    document.getElementById("heads-size").textContent = formatBytes(headsBytes);
    document.getElementById("saved-size").textContent = formatBytes(separate - merged);
    document.getElementById("num-branches").textContent = String(numBranches);
    document.getElementById("branches-plural").textContent = numBranches === 1 ? "" : "es";
    document.getElementById("branch-empty").hidden = numBranches > 0;
    document.getElementById("num-heads").textContent = String(count);
    document.getElementById("size-ratio").textContent = (merged ? separate / merged : 0).toFixed(2) + "\u00d7";
    document.getElementById("saved-bytes").textContent = formatBytes(separate - merged);
    document.getElementById("merged-meter").style.width = (separate ? Math.round((100 * merged) / separate) : 0) + "%";
    document.getElementById("task-id-empty").hidden = count > 0;
    document.getElementById("duplicate-note").hidden = !duplicate;
    document.getElementById("btn-build").disabled = count === 0;
    syncSelectAll();
  }

  function setBytes(name, bytes) {
    var strong = document.getElementById(name + "-bytes");
    strong.textContent = formatBytes(bytes);
    strong.setAttribute("data-bytes", String(bytes));
    exact(name, bytes);
  }

  function exact(name, value) {
    form.querySelector("[data-exact=" + name + "]").textContent = String(value);
  }

  // The row's task slug with its version beside it, muted.
  function taskCell(row) {
    var task = cell(row.dataset.task + " ");
    var version = document.createElement("span");
    version.className = "muted small";
    version.textContent = "v" + row.dataset.version;
    task.appendChild(version);
    return task;
  }

  function branchRow(row) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-task", row.dataset.task);
    tr.appendChild(taskCell(row));
    var after = document.createElement("td");
    var code = document.createElement("code");
    code.textContent = row.dataset.branchAfter;
    after.appendChild(code);
    tr.appendChild(after);
    tr.appendChild(cell(Number(row.dataset.branchParams || 0).toLocaleString("en-US"), "num"));
    tr.appendChild(cell(formatBytes(Number(row.dataset.branchBytes) || 0), "num"));
    return tr;
  }

  function syncSelectAll() {
    if (!selectAll) return;
    var visible = rows.filter(shown);
    var checked = visible.filter(function (row) { return box(row).checked; }).length;
    selectAll.checked = visible.length > 0 && checked === visible.length;
    selectAll.indeterminate = checked > 0 && checked < visible.length;
  }

  if (backboneSelect) {
    backboneSelect.addEventListener("change", function () {
      window.location.search = "?backbone=" + encodeURIComponent(backboneSelect.value);
    });
  }
  if (filter) {
    filter.addEventListener("input", function () {
      var needle = filter.value.trim().toLowerCase();
      var any = false;
      rows.forEach(function (row) {
        row.hidden = needle !== "" && row.dataset.search.toLowerCase().indexOf(needle) < 0;
        any = any || !row.hidden;
      });
      document.getElementById("filter-empty").hidden = any;
      syncSelectAll();
    });
    // Enter in the filter box must not submit the build.
    filter.addEventListener("keydown", function (event) { if (event.key === "Enter") event.preventDefault(); });
  }
  if (selectAll) {
    selectAll.addEventListener("change", function () {
      rows.filter(shown).forEach(function (row) { box(row).checked = selectAll.checked; });
      update();
    });
  }
  rows.forEach(function (row) { box(row).addEventListener("change", update); });
  if (allLatest) allLatest.addEventListener("change", update);
  if (rows.length || allLatest) update();
})();
