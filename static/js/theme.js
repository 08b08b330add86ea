// Applies the saved theme (light / dark; nothing saved: the system's) before the first
// paint. Loaded without defer in <head>, as a file: the CSP allows no inline script.
(function () {
  "use strict";
  try {
    var theme = window.localStorage.getItem("easel-theme");
    if (theme === "light" || theme === "dark") document.documentElement.setAttribute("data-theme", theme);
  } catch (e) { /* storage blocked: the system's theme applies */ }
})();
