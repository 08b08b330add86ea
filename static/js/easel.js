// Easel: behaviour shared by every page. No inline script anywhere (CSP-ready):
// pages pass data through data-* attributes and json_script blocks.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function ready(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  function dismiss(toast) {
    toast.classList.add("is-leaving");
    window.setTimeout(function () { toast.remove(); }, 300);
  }

  ready(function () {
    // Toasts: close on click, leave by themselves after a while (errors stay longer).
    document.querySelectorAll("[data-toast]").forEach(function (toast) {
      var close = toast.querySelector("[data-dismiss]");
      if (close) close.addEventListener("click", function () { dismiss(toast); });
      var delay = toast.classList.contains("toast--error") ? 12000 : 6000;
      window.setTimeout(function () { dismiss(toast); }, delay);
    });

    // Selects that submit their form on change (the language switcher).
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () {
        if (select.form.requestSubmit) select.form.requestSubmit();
        else select.form.submit();
      });
    });

    // Forms that ask first. Without script the server shows a confirmation page
    // instead; with it, confirm() answers and confirm=yes skips that page.
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) {
          event.preventDefault();
          return;
        }
        if (!form.querySelector("input[name=confirm]")) {
          var input = document.createElement("input");
          input.type = "hidden";
          input.name = "confirm";
          input.value = "yes";
          form.appendChild(input);
        }
      });
    });

    // Read-only fields holding a link or a token: select all on focus, ready to copy.
    document.querySelectorAll("input[data-select-on-focus]").forEach(function (input) {
      input.addEventListener("focus", function () { input.select(); });
    });

    // Close the user menu when clicking elsewhere.
    document.addEventListener("click", function (event) {
      document.querySelectorAll("details.user-menu[open]").forEach(function (menu) {
        if (!menu.contains(event.target)) menu.removeAttribute("open");
      });
    });
  });
})();
