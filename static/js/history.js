// History: the bulk bar counts the selected tasks and enables its buttons.
(function () {
  "use strict";

  function init() {
    var bar = document.querySelector("[data-bulk]");
    if (!bar) return;
    var count = bar.querySelector("[data-bulk-count]");
    var idle = count ? count.textContent : "";
    var template = bar.dataset.selectedLabel || "%(n)s selected";
    var remove = bar.querySelector("button[data-confirm]");
    function sync() {
      var n = document.querySelectorAll("input[data-bulk-item]:checked").length;
      // The delete question names how many tasks go (easel.js asks it).
      if (remove && n) {
        remove.dataset.confirm = (n === 1 ? remove.dataset.confirmOne : remove.dataset.confirmOther)
          .replace("%(n)s", n);
      }
      bar.querySelectorAll("[data-bulk-action]").forEach(function (b) { b.disabled = n === 0; });
      bar.classList.toggle("bulk-bar--active", n > 0);
      if (count) count.textContent = n ? template.replace("%(n)s", n) : idle;
    }
    document.addEventListener("change", function (event) {
      if (event.target.matches && event.target.matches("input[data-bulk-item]")) sync();
    });
    sync();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
