// Full-size viewer: a click on a [data-viewer] link opens the picture over the page
// with zoom in / out / fit; Esc (or the close button, or a click on the backdrop)
// closes it. Without script the link simply opens the image.
(function () {
  "use strict";

  var STEPS = [0.1, 0.25, 0.33, 0.5, 0.67, 0.75, 1, 1.25, 1.5, 2, 3, 4, 6, 8];
  var overlay, stage, img, label, opener, scale = 1, fitScale = 1;

  function button(text, title, onClick, extra) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "button button--small viewer__button" + (extra ? " " + extra : "");
    b.textContent = text;
    b.title = title;
    b.setAttribute("aria-label", title);
    b.addEventListener("click", onClick);
    return b;
  }

  function apply() {
    if (!img.naturalWidth) return;
    img.style.width = Math.round(img.naturalWidth * scale) + "px";
    img.style.height = Math.round(img.naturalHeight * scale) + "px";
    label.textContent = Math.round(scale * 100) + "%";
    overlay.classList.toggle("viewer--zoomed", scale > fitScale + 0.001);
  }

  function fit() {
    if (!img.naturalWidth) return;
    var w = stage.clientWidth - 16, h = stage.clientHeight - 16;
    fitScale = Math.min(w / img.naturalWidth, h / img.naturalHeight, 1);
    scale = fitScale;
    apply();
  }

  function zoom(direction) {
    var next = direction > 0
      ? STEPS.find(function (s) { return s > scale + 0.001; })
      : STEPS.slice().reverse().find(function (s) { return s < scale - 0.001; });
    if (next) { scale = next; apply(); }
  }

  function build() {
    // The page's words, in the reader's language ({% viewer_labels %}).
    var node = document.getElementById("viewer-labels");
    var labels = node ? JSON.parse(node.textContent)
      : { zoomIn: "Zoom in", zoomOut: "Zoom out", fit: "Fit to window", close: "Close", dialog: "Picture viewer" };
    overlay = document.createElement("div");
    overlay.className = "viewer";
    overlay.hidden = true;
    overlay.setAttribute("role", "dialog");
    overlay.setAttribute("aria-modal", "true");
    overlay.setAttribute("aria-label", labels.dialog);
    overlay.setAttribute("data-viewer-overlay", "");
    var bar = document.createElement("div");
    bar.className = "viewer__bar";
    label = document.createElement("span");
    label.className = "viewer__scale";
    label.setAttribute("data-viewer-scale", "");
    bar.appendChild(button("−", labels.zoomOut, function () { zoom(-1); }, "viewer__out"));
    bar.appendChild(label);
    bar.appendChild(button("+", labels.zoomIn, function () { zoom(1); }, "viewer__in"));
    bar.appendChild(button("⤢", labels.fit, fit, "viewer__fit"));
    bar.appendChild(button("×", labels.close, close, "viewer__close"));
    stage = document.createElement("div");
    stage.className = "viewer__stage";
    img = document.createElement("img");
    img.className = "viewer__img";
    img.alt = "";
    img.addEventListener("load", fit);
    stage.appendChild(img);
    stage.addEventListener("click", function (event) { if (event.target === stage) close(); });
    overlay.appendChild(bar);
    overlay.appendChild(stage);
    document.body.appendChild(overlay);
    document.addEventListener("keydown", function (event) {
      if (overlay.hidden) return;
      if (event.key === "Escape") { event.preventDefault(); close(); }
      else if (event.key === "+" || event.key === "=") zoom(1);
      else if (event.key === "-") zoom(-1);
      else if (event.key === "0") fit();
    });
    window.addEventListener("resize", function () { if (!overlay.hidden && scale <= fitScale + 0.001) fit(); });
  }

  function open(link) {
    if (!overlay) build();
    opener = link;
    var thumb = link.querySelector("img");
    img.alt = thumb ? thumb.alt : "";
    img.removeAttribute("style");
    img.src = link.dataset.full || link.href;
    overlay.hidden = false;
    document.documentElement.classList.add("viewer-open");
    overlay.querySelector(".viewer__close").focus();
    if (img.complete && img.naturalWidth) fit();
  }

  function close() {
    overlay.hidden = true;
    document.documentElement.classList.remove("viewer-open");
    if (opener) opener.focus();
  }

  function init() {
    document.addEventListener("click", function (event) {
      var link = event.target.closest && event.target.closest("a[data-viewer]");
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      open(link);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
