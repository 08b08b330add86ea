// The account page: the theme switch (stored in this browser only).
(function () {
  "use strict";
  var KEY = "easel-theme";

  function init() {
    var group = document.querySelector("[data-theme-choice]");
    if (!group) return;
    var saved = null;
    try { saved = window.localStorage.getItem(KEY); } catch (e) { /* blocked */ }
    var current = saved === "light" || saved === "dark" ? saved : "system";
    group.querySelectorAll("input[name=theme]").forEach(function (input) {
      input.checked = input.value === current;
      input.addEventListener("change", function () {
        if (!input.checked) return;
        try {
          if (input.value === "system") window.localStorage.removeItem(KEY);
          else window.localStorage.setItem(KEY, input.value);
        } catch (e) { /* blocked: applies to this page view only */ }
        if (input.value === "system") document.documentElement.removeAttribute("data-theme");
        else document.documentElement.setAttribute("data-theme", input.value);
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
