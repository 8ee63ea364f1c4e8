// Small page behaviours declared in HTML with data- attributes, so that no page needs inline
// script, event-handler attributes or style attributes (the Content-Security-Policy forbids them).
//   data-confirm="Question?"  on a <form>: ask before submitting
//   data-autosubmit           on a <select>: submit its form on change
//   data-select-on-focus      on an <input>: select its text when focused
//   data-width="42.5"         on an element: set its CSS width to that percentage
(function () {
  "use strict";
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  document.querySelectorAll("input[data-select-on-focus]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });
  document.querySelectorAll("[data-width]").forEach(function (element) {
    var width = parseFloat(element.dataset.width);
    element.style.width = (isFinite(width) ? Math.max(0, Math.min(100, width)) : 0) + "%";
  });
})();
