// The mask editor (generation/web/widgets.py MaskEditorWidget): paint a mask over the
// source picture with mouse, pen or touch; the mask is written into the widget's own
// file input as a PNG of the picture's size (white = painted, black = kept, opaque),
// or no file at all when nothing is painted. The words come from the widget's markup.
(function () {
  "use strict";

  var UNDO_LIMIT = 30;
  var ZOOM_STEPS = [0.05, 0.1, 0.25, 0.33, 0.5, 0.67, 0.75, 1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16];
  var ERASER_BUTTON = 5; // a pen's eraser end (Pointer Events)

  function MaskEditor(root) {
    this.root = root;
    this.form = root.closest("form");
    this.fileInput = root.querySelector("[data-mask-file] input[type=file]");
    this.canvas = root.querySelector("[data-mask-canvas]");
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.picture = root.querySelector("[data-mask-picture]");
    this.stage = root.querySelector("[data-mask-stage]");
    this.layers = root.querySelector("[data-mask-layers]");
    this.tools = root.querySelector("[data-mask-tools]");
    this.sizeInput = root.querySelector("[data-mask-size]");
    this.sizeValue = root.querySelector("[data-mask-size-value]");
    this.scaleLabel = root.querySelector("[data-mask-scale]");
    this.error = root.querySelector("[data-mask-error]");
    this.empty = root.querySelector("[data-mask-empty]");
    this.hint = root.querySelector("[data-mask-hint]");
    this.undoButton = root.querySelector("[data-mask-action=undo]");
    this.tool = "brush";
    this.sizeTouched = false;
    this.undo = [];
    this.scale = 1;
    this.fitted = true;
    this.active = null;
    this.last = null;
    this.erasing = false;
    this.width = 0;
    this.height = 0;
    this.loaded = false;
    this.pending = null;
    this.version = 0;
    this.objectUrl = null;
    this.colour = this.paintColour();
    this.source = this.findSource();
    this.bind();
    // Script runs: the file box gives way to the painter.
    root.querySelector("[data-mask-file]").hidden = true;
    root.classList.add("mask-editor--ready");
    this.pickSource();
  }

  MaskEditor.prototype.findSource = function () {
    var name = this.root.dataset.sourceName;
    if (!name) return null;
    var scope = this.form || document;
    var inputs = scope.querySelectorAll("input[type=file]");
    return Array.prototype.find.call(inputs, function (input) {
      return input.name === name || input.name.slice(-(name.length + 1)) === "-" + name;
    }) || null;
  };

  // The colour the mask shows in (the stylesheet's --mask-colour), as [r, g, b].
  MaskEditor.prototype.paintColour = function () {
    var css = getComputedStyle(this.root).getPropertyValue("--mask-colour").trim() || "#ff2d78";
    this.ctx.fillStyle = "#ff2d78";
    this.ctx.fillStyle = css;
    var hex = this.ctx.fillStyle;
    var m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
    return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : [255, 45, 120];
  };

  MaskEditor.prototype.css = function () {
    return "rgb(" + this.colour.join(",") + ")";
  };

  MaskEditor.prototype.bind = function () {
    var self = this;
    if (this.source) {
      this.source.addEventListener("change", function () { self.pickSource(); });
    }
    // Whoever changes data-source-url (a page picking a past result) moves the editor.
    new MutationObserver(function () { self.pickSource(); })
      .observe(this.root, { attributes: true, attributeFilter: ["data-source-url"] });

    this.root.querySelectorAll("[data-mask-tool]").forEach(function (button) {
      button.addEventListener("click", function () { self.setTool(button.dataset.maskTool); });
    });
    this.root.querySelectorAll("[data-mask-action]").forEach(function (button) {
      button.addEventListener("click", function () { self.action(button.dataset.maskAction); });
    });
    this.sizeInput.addEventListener("input", function () {
      self.sizeTouched = true;
      self.sizeValue.textContent = self.sizeInput.value;
    });
    this.root.addEventListener("keydown", function (event) {
      if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z"
          && event.target.tagName !== "INPUT") {
        event.preventDefault();
        self.action("undo");
      }
    });

    var canvas = this.canvas;
    canvas.addEventListener("pointerdown", function (event) { self.down(event); });
    canvas.addEventListener("pointermove", function (event) { self.move(event); });
    ["pointerup", "pointercancel", "lostpointercapture"].forEach(function (type) {
      canvas.addEventListener(type, function (event) { self.up(event); });
    });
    canvas.addEventListener("contextmenu", function (event) { event.preventDefault(); });
    window.addEventListener("resize", function () { if (self.loaded && self.fitted) self.fit(); });

    if (this.form) {
      // A mask still being written holds the submission back until it is in the input.
      this.form.addEventListener("submit", function (event) {
        if (!self.pending || event.defaultPrevented) return;
        event.preventDefault();
        var submitter = event.submitter && event.submitter.form === self.form ? event.submitter : undefined;
        self.pending.then(function () { self.form.requestSubmit(submitter); });
      });
    }
  };

  // --- the source picture -------------------------------------------------------
  MaskEditor.prototype.pickSource = function () {
    var file = this.source && this.source.files && this.source.files[0];
    if (this.objectUrl) {
      URL.revokeObjectURL(this.objectUrl);
      this.objectUrl = null;
    }
    var url = this.root.dataset.sourceUrl || "";
    if (file) {
      this.objectUrl = URL.createObjectURL(file);
      url = this.objectUrl;
    }
    if (url === this.url) return;
    this.url = url;
    this.reset();
    if (!url) return;
    var self = this;
    var token = this.version;
    this.picture.onload = function () { if (token === self.version) self.ready(); };
    this.picture.onerror = function () {
      if (token !== self.version) return;
      self.error.textContent = self.root.dataset.loadFailed || "";
      self.error.hidden = false;
    };
    this.picture.src = url;
  };

  MaskEditor.prototype.reset = function () {
    this.version += 1;
    this.loaded = false;
    this.pending = null;
    this.undo = [];
    this.active = null;
    this.updateUndo();
    this.clearFile();
    this.error.hidden = true;
    this.error.textContent = "";
    this.stage.hidden = this.tools.hidden = this.hint.hidden = true;
    this.empty.hidden = !!this.url;
    this.root.classList.remove("mask-editor--loaded");
  };

  MaskEditor.prototype.ready = function () {
    this.width = this.picture.naturalWidth;
    this.height = this.picture.naturalHeight;
    // The mask has the picture's own size, whatever size it is shown at.
    this.canvas.width = this.width;
    this.canvas.height = this.height;
    this.ctx.clearRect(0, 0, this.width, this.height);
    if (!this.sizeTouched) {
      var size = Math.max(1, Math.min(256, Math.round(Math.max(this.width, this.height) / 24)));
      this.sizeInput.value = String(size);
      this.sizeValue.textContent = this.sizeInput.value;
    }
    this.loaded = true;
    this.stage.hidden = this.tools.hidden = this.hint.hidden = false;
    this.empty.hidden = true;
    this.root.classList.add("mask-editor--loaded");
    this.fit();
  };

  // --- tools and actions -------------------------------------------------------
  MaskEditor.prototype.setTool = function (tool) {
    this.tool = tool;
    this.root.querySelectorAll("[data-mask-tool]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.maskTool === tool));
    });
    this.root.classList.toggle("mask-editor--erasing", tool === "eraser");
  };

  MaskEditor.prototype.action = function (name) {
    if (!this.loaded) return;
    if (name === "undo") {
      var state = this.undo.pop();
      if (!state) return;
      this.restore(state);
      this.updateUndo();
      this.changed();
    } else if (name === "clear") {
      this.remember();
      this.ctx.clearRect(0, 0, this.width, this.height);
      this.changed();
    } else if (name === "invert") {
      this.remember();
      var ctx = this.ctx;
      ctx.save();
      // xor with an opaque fill: painted becomes clear and clear becomes painted.
      ctx.globalCompositeOperation = "xor";
      ctx.fillStyle = this.css();
      ctx.fillRect(0, 0, this.width, this.height);
      ctx.restore();
      this.changed();
    } else if (name === "fit") {
      this.fit();
    } else if (name === "zoom-in" || name === "zoom-out") {
      var scale = this.scale;
      var next = name === "zoom-in"
        ? ZOOM_STEPS.find(function (s) { return s > scale * 1.001; })
        : ZOOM_STEPS.slice().reverse().find(function (s) { return s < scale * 0.999; });
      if (next) {
        this.fitted = false;
        this.apply(next);
      }
    }
  };

  MaskEditor.prototype.fit = function () {
    var width = Math.max(this.stage.clientWidth - 2, 50);
    var height = Math.max(window.innerHeight * 0.7, 240);
    this.fitted = true;
    this.apply(Math.min(width / this.width, height / this.height));
  };

  MaskEditor.prototype.apply = function (scale) {
    this.scale = scale;
    this.layers.style.width = Math.round(this.width * scale) + "px";
    this.layers.style.height = Math.round(this.height * scale) + "px";
    this.scaleLabel.textContent = Math.round(scale * 100) + "%";
  };

  // --- undo: each state's alpha, run-length encoded (masks are mostly long runs) ----
  MaskEditor.prototype.remember = function () {
    var alpha = this.ctx.getImageData(0, 0, this.width, this.height).data;
    var runs = [];
    var value = alpha[3], count = 0;
    for (var i = 3; i < alpha.length; i += 4) {
      if (alpha[i] === value) { count += 1; continue; }
      runs.push(value, count);
      value = alpha[i];
      count = 1;
    }
    runs.push(value, count);
    this.undo.push(Uint32Array.from(runs));
    if (this.undo.length > UNDO_LIMIT) this.undo.shift();
    this.updateUndo();
  };

  MaskEditor.prototype.restore = function (runs) {
    var image = this.ctx.createImageData(this.width, this.height);
    var data = image.data, at = 0, c = this.colour;
    for (var r = 0; r < runs.length; r += 2) {
      var value = runs[r], end = at + runs[r + 1] * 4;
      for (; at < end; at += 4) {
        if (value) {
          data[at] = c[0]; data[at + 1] = c[1]; data[at + 2] = c[2]; data[at + 3] = value;
        }
      }
    }
    this.ctx.putImageData(image, 0, 0);
  };

  MaskEditor.prototype.updateUndo = function () {
    this.undoButton.disabled = this.undo.length === 0;
  };

  // --- painting ----------------------------------------------------------------
  MaskEditor.prototype.point = function (event) {
    var rect = this.canvas.getBoundingClientRect();
    return {
      x: (event.clientX - rect.left) * this.width / rect.width,
      y: (event.clientY - rect.top) * this.height / rect.height,
    };
  };

  MaskEditor.prototype.brush = function () {
    var ctx = this.ctx;
    ctx.globalCompositeOperation = this.erasing ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = this.css();
    ctx.lineWidth = Number(this.sizeInput.value);
    ctx.lineCap = ctx.lineJoin = "round";
    return ctx;
  };

  MaskEditor.prototype.down = function (event) {
    if (!this.loaded || this.active !== null) return;
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    this.active = event.pointerId;
    try { this.canvas.setPointerCapture(event.pointerId); } catch (e) { /* a pointer already gone */ }
    this.erasing = this.tool === "eraser" || event.button === ERASER_BUTTON;
    this.remember();
    this.last = this.point(event);
    var ctx = this.brush();
    ctx.beginPath();
    ctx.arc(this.last.x, this.last.y, ctx.lineWidth / 2, 0, Math.PI * 2);
    ctx.fill();
    ctx.globalCompositeOperation = "source-over";
  };

  MaskEditor.prototype.move = function (event) {
    if (event.pointerId !== this.active || !this.last) return;
    var events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    if (!events.length) events = [event];
    var ctx = this.brush();
    ctx.beginPath();
    ctx.moveTo(this.last.x, this.last.y);
    for (var i = 0; i < events.length; i++) {
      this.last = this.point(events[i]);
      ctx.lineTo(this.last.x, this.last.y);
    }
    ctx.stroke();
    ctx.globalCompositeOperation = "source-over";
  };

  MaskEditor.prototype.up = function (event) {
    if (event.pointerId !== this.active) return;
    this.active = null;
    this.last = null;
    this.changed();
  };

  // --- the mask into the file input --------------------------------------------
  MaskEditor.prototype.changed = function () {
    var alpha = this.ctx.getImageData(0, 0, this.width, this.height).data;
    var out = new ImageData(this.width, this.height);
    var data = out.data, painted = false;
    for (var i = 0; i < alpha.length; i += 4) {
      // The edge of a stroke is half covered: painted from half on, so the mask is 0 or 255.
      var v = alpha[i + 3] >= 128 ? 255 : 0;
      if (v) painted = true;
      data[i] = data[i + 1] = data[i + 2] = v;
      data[i + 3] = 255;
    }
    this.version += 1;
    if (!painted) {
      this.pending = null;
      this.clearFile();
      return;
    }
    var canvas = document.createElement("canvas");
    canvas.width = this.width;
    canvas.height = this.height;
    canvas.getContext("2d").putImageData(out, 0, 0);
    var self = this, token = this.version;
    var done = new Promise(function (resolve) {
      canvas.toBlob(function (blob) {
        if (token === self.version && blob) {
          self.setFile(new File([blob], "mask.png", { type: "image/png" }));
          self.pending = null;
        }
        resolve();
      }, "image/png");
    });
    this.pending = done;
  };

  MaskEditor.prototype.setFile = function (file) {
    var transfer = new DataTransfer();
    transfer.items.add(file);
    this.fileInput.files = transfer.files;
  };

  MaskEditor.prototype.clearFile = function () {
    this.fileInput.value = "";
  };

  function init() {
    document.querySelectorAll("[data-mask-editor]").forEach(function (root) {
      if (root.dataset.ready) return;
      root.dataset.ready = "1";
      root.maskEditor = new MaskEditor(root);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
