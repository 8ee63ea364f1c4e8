// The home page's system health list, filled from GET /api/health/. Staff see each part's
// detail; everyone else gets only the overall status, shown on every part.
(function () {
  "use strict";
  var list = document.getElementById("health");
  if (!list) return;
  fetch(list.dataset.url, { credentials: "same-origin" })
    .then(function (response) { return response.json(); })
    .then(function (report) {
      list.querySelectorAll("li").forEach(function (li) {
        var check = report[li.dataset.check];
        var ok = check ? check.ok : report.status === "ok";
        li.classList.add(ok ? "ok" : "bad");
        li.title = check ? (check.ok ? String(check.detail) : check.error || "unknown") : "overall: " + report.status;
      });
    })
    .catch(function () { list.classList.add("unknown"); });
})();
