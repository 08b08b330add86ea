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

  // The clipboard API where the page may use it (HTTPS or localhost), else the old
  // copy command on the selected field. Answers whether the text was copied.
  function copyText(field) {
    function legacy() {
      field.focus();
      field.select();
      try { return document.execCommand("copy"); } catch (e) { return false; }
    }
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(field.value).then(function () { return true; }, legacy);
    }
    return Promise.resolve(legacy());
  }

  // <time data-when> from {% when %}: "just now", "5 minutes ago"… kept true while the
  // page stays open, with the server's words and thresholds (easel_time.py). Past a day
  // the title's absolute form (the server's format, in the studio's time zone) stands.
  function freshTimes() {
    var node = document.getElementById("easel-time");
    if (!node || !document.querySelector("time[data-when]")) return;
    var words = JSON.parse(node.textContent);
    // The server's clock, so a visitor's wrong clock does not change the words.
    var skew = Date.parse(words.now) - Date.now();
    var MINUTE = 60000, HOUR = 3600000, DAY = 86400000;

    function phrase(forms, n) {
      return (n === 1 ? forms[0] : forms[1]).replace(/%\(n\)[sd]/, n);
    }

    function say(ms) {
      var past = ms <= 0, span = Math.abs(ms);
      if (span < MINUTE) return past ? words.justNow : words.inAMoment;
      if (span < HOUR) return phrase(past ? words.minutesAgo : words.inMinutes, Math.floor(span / MINUTE));
      if (span < DAY) return phrase(past ? words.hoursAgo : words.inHours, Math.floor(span / HOUR));
      return null;
    }

    function refresh() {
      var now = Date.now() + skew;
      document.querySelectorAll("time[data-when]").forEach(function (time) {
        var at = Date.parse(time.getAttribute("datetime"));
        if (isNaN(at)) return;
        var text = say(at - now) || time.title;
        if (text && time.textContent !== text) time.textContent = text;
      });
    }

    refresh();
    window.setInterval(refresh, 30000);
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

    // Deletions ask first, one way everywhere. Without script the server shows its
    // confirmation page instead; with it, confirm() answers and confirm=yes skips that
    // page. The question sits on the form, or on the one button of a form that asks
    // (the history's bulk bar also downloads, which needs no question).
    document.querySelectorAll("form").forEach(function (form) {
      if (form.dataset.confirm === undefined && !form.querySelector("button[data-confirm]")) return;
      form.addEventListener("submit", function (event) {
        var submitter = event.submitter;
        var question = submitter && submitter.dataset.confirm !== undefined
          ? submitter.dataset.confirm : form.dataset.confirm;
        if (question === undefined) return;
        if (!window.confirm(question)) {
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

    // Copy buttons: hidden until this script shows them; without script the field
    // beside them is there to select and copy by hand.
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var field = document.getElementById(button.dataset.copy);
      if (!field) return;
      var idle = button.textContent;
      var timer = null;
      button.hidden = false;
      button.addEventListener("click", function () {
        copyText(field).then(function (copied) {
          button.textContent = copied ? button.dataset.copied : button.dataset.copyFailed;
          if (!copied) { field.focus(); field.select(); }
          window.clearTimeout(timer);
          timer = window.setTimeout(function () { button.textContent = idle; }, 2500);
        });
      });
    });

    freshTimes();

    // Close the user menu when clicking elsewhere.
    document.addEventListener("click", function (event) {
      document.querySelectorAll("details.user-menu[open]").forEach(function (menu) {
        if (!menu.contains(event.target)) menu.removeAttribute("open");
      });
    });
  });
})();
