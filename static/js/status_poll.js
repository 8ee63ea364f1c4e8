/* Follow a background validation/import: poll the JSON API every 1.5 s while the status is
 * pending, update the status badge and error text, and reload the page once it settles so
 * that the full result (layers, report, review panel) is rendered by the server.
 *
 * Markup: <section data-poll-url="/api/heads/7/" data-poll-status="validating"> containing
 * [data-status-badge] and optionally [data-status-error]. The pending statuses default to
 * validating/queued/running; data-poll-pending="queued building verifying" overrides them.
 * The root's data-poll-status follows the status, so CSS can show progress. No dependencies.
 */
(function () {
  "use strict";
  var PENDING = ["validating", "queued", "running"];
  var INTERVAL_MS = 1500;

  function label(status) { return String(status).replace(/_/g, " "); }

  function follow(root) {
    var status = root.getAttribute("data-poll-status");
    var custom = root.getAttribute("data-poll-pending");
    var pending = custom ? custom.split(/\s+/).filter(Boolean) : PENDING;
    if (pending.indexOf(status) < 0) return;
    var url = root.getAttribute("data-poll-url");
    var busy = false;
    var timer = window.setInterval(function () {
      if (busy) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (!data || !data.status || data.status === status) return;
          status = data.status;
          root.setAttribute("data-poll-status", status);
          root.querySelectorAll("[data-status-badge]").forEach(function (badge) {
            badge.textContent = label(status);
            badge.className = "badge badge-" + status;
          });
          root.querySelectorAll("[data-status-error]").forEach(function (box) {
            box.textContent = data.error || "";
            box.hidden = !data.error;
          });
          if (pending.indexOf(status) < 0) {
            window.clearInterval(timer);
            window.location.reload();
          }
        })
        .catch(function () { /* transient network error: try again on the next tick */ })
        .then(function () { busy = false; });
    }, INTERVAL_MS);
  }

  document.querySelectorAll("[data-poll-url]").forEach(follow);
})();
