/* Job forms: when a backbone is picked, hide the dataset and layer options that do not fit it.
 *
 * Markup: the backbone <select name="backbone">, and selects marked [data-filter-by-backbone]
 * whose options carry data-backbones="1 4" (the ids of the backbones they fit). Options
 * without data-backbones (the blank choice) always stay. The server checks again: this only
 * keeps people from picking a pair that would fail. No dependencies.
 */
(function () {
  "use strict";
  var form = document.getElementById("job-form");
  if (!form) return;
  var backbone = form.querySelector("select[name=backbone]");

  function filter() {
    var chosen = backbone ? backbone.value : "";
    form.querySelectorAll("select[data-filter-by-backbone]").forEach(function (select) {
      var firstFit = null;
      Array.prototype.forEach.call(select.options, function (option) {
        var ids = option.getAttribute("data-backbones");
        var fits = ids === null || ids.split(" ").indexOf(chosen) >= 0;
        option.hidden = !fits;
        option.disabled = !fits;
        if (fits && firstFit === null && ids !== null) firstFit = option;
      });
      var current = select.options[select.selectedIndex];
      if (current && current.disabled) {
        var blank = select.querySelector("option:not([data-backbones])");
        (blank || firstFit || current).selected = true;
      }
    });
  }

  // grow_backbone: show the field that belongs to the chosen change (insert kind or widen units).
  function toggleChange() {
    var checked = form.querySelector("input[name=change]:checked");
    if (!checked) return;
    var kind = form.querySelector("[name=insert_kind]");
    var units = form.querySelector("[name=units]");
    if (kind) kind.closest(".field").hidden = checked.value !== "insert";
    if (units) units.closest(".field").hidden = checked.value !== "widen";
  }

  if (backbone) backbone.addEventListener("change", filter);
  form.querySelectorAll("input[name=change]").forEach(function (radio) {
    radio.addEventListener("change", toggleChange);
  });
  filter();
  toggleChange();
})();
