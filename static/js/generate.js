// The generate page: Ctrl+Enter submits, size presets, model descriptions and defaults,
// the template picker (img2img source and denoise), the seed tools, and the user's
// last choices remembered in this browser.
(function () {
  "use strict";

  function init() {
    var form = document.querySelector("[data-generate-form]");
    if (!form) return;
    var infoNode = document.getElementById("checkpoint-info");
    var info = infoNode ? JSON.parse(infoNode.textContent) : {};
    var el = function (name) { return form.elements.namedItem(name); };
    var templateNode = document.getElementById("template-info");
    var templates = templateNode ? JSON.parse(templateNode.textContent) : {};

    // Remember the last choices (not the prompt: a new picture usually wants a new one).
    var REMEMBER = ["model", "template", "size", "width", "height", "steps", "cfg", "sampler", "scheduler",
                    "batch_size", "denoise", "negative_prompt"];
    var STORE = "easel-generate";
    if (form.hasAttribute("data-restore")) {
      try {
        var saved = JSON.parse(window.localStorage.getItem(STORE) || "null");
        if (saved) {
          REMEMBER.forEach(function (name) {
            var field = el(name);
            if (!field || saved[name] === undefined || saved[name] === null) return;
            if (field.tagName === "SELECT" &&
                !Array.prototype.some.call(field.options, function (o) { return o.value === saved[name]; })) return;
            field.value = saved[name];
          });
          if (el("seed_random") && typeof saved.seed_random === "boolean") el("seed_random").checked = saved.seed_random;
        }
      } catch (e) { /* storage blocked or damaged: keep the server's defaults */ }
    }
    form.addEventListener("submit", function () {
      var values = {};
      REMEMBER.forEach(function (name) {
        var field = el(name);
        if (field && field.value !== undefined && !(field instanceof RadioNodeList)) values[name] = field.value;
      });
      if (el("seed_random")) values.seed_random = el("seed_random").checked;
      try { window.localStorage.setItem(STORE, JSON.stringify(values)); } catch (e) { /* ignore */ }
    });

    // Seed: "random" clears the box; typing a seed (or reusing the last) unticks it.
    var seed = el("seed");
    var seedRandom = el("seed_random");
    if (seed && seedRandom) {
      var syncSeed = function () { if (seedRandom.checked) seed.value = ""; };
      seedRandom.addEventListener("change", syncSeed);
      seed.addEventListener("input", function () { if (seed.value !== "") seedRandom.checked = false; });
      if (seed.value !== "") seedRandom.checked = false;
      syncSeed();
      var reuse = form.querySelector("[data-last-seed]");
      if (reuse) reuse.addEventListener("click", function () {
        seed.value = reuse.dataset.lastSeed;
        seedRandom.checked = false;
        seed.focus();
      });
    }

    // Template: img2img shows the source picker and denoise, and hides the size (the
    // picture's own size is used).
    var template = el("template");
    var sourceSection = form.querySelector("[data-source-section]");
    var sizeFields = form.querySelector("[data-size-fields]");
    var denoiseField = form.querySelector("[data-denoise-field]");
    function syncTemplate() {
      var info = template ? templates[template.value] : null;
      if (!info) return;
      if (sourceSection) sourceSection.hidden = !info.image;
      if (denoiseField) denoiseField.hidden = !info.denoise;
      if (sizeFields) sizeFields.hidden = !info.size;
      // An upscale takes no prompt and no model.
      ["prompt", "negative_prompt", "model"].forEach(function (name) {
        var input = el(name);
        var box = input && input.closest(".field");
        if (box) box.hidden = info[name === "model" ? "model" : "prompt"] === false;
      });
    }
    // A template with inputs of its own (LoRAs, a mask…) has its own form: switching to
    // or from one reloads the page for it, keeping what was written.
    var shownTemplate = template ? template.value : "";
    function hasTool(slug) {
      var info = templates[slug];
      return !!(info && info.tool && info.tool.length);
    }
    if (template) {
      template.addEventListener("change", function () {
        if (hasTool(template.value) || hasTool(shownTemplate)) {
          var query = new URLSearchParams();
          ["template", "prompt", "negative_prompt", "model", "source"].forEach(function (name) {
            var field = form.elements[name];
            var value = field && (field.value !== undefined ? field.value : "");
            if (name === "source") {
              var picked = form.querySelector("input[name=source]:checked");
              value = picked ? picked.value : "";
            }
            if (value) query.set(name, value);
          });
          window.location.search = query.toString();
          return;
        }
        syncTemplate();
      });
      syncTemplate();
    }

    // Source picture: choose a file, or drop one on the drop zone; a preview shows it.
    var zone = form.querySelector("[data-dropzone]");
    var fileInput = el("source_file");
    var sourcePreview = form.querySelector("[data-source-preview]");
    var previewUrl = null;
    function showFile(file) {
      if (!sourcePreview) return;
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = file ? URL.createObjectURL(file) : null;
      sourcePreview.hidden = !file;
      if (file) sourcePreview.src = previewUrl;
      // A new file wins over a picked past picture: untick those to say so.
      if (file) {
        var none = form.querySelector("input[name=source][value='']");
        if (none) none.checked = true;
      }
    }
    if (fileInput) fileInput.addEventListener("change", function () { showFile(fileInput.files[0] || null); });
    if (zone && fileInput) {
      ["dragenter", "dragover"].forEach(function (type) {
        zone.addEventListener(type, function (event) {
          event.preventDefault();
          zone.classList.add("dropzone--over");
        });
      });
      ["dragleave", "dragend"].forEach(function (type) {
        zone.addEventListener(type, function () { zone.classList.remove("dropzone--over"); });
      });
      zone.addEventListener("drop", function (event) {
        event.preventDefault();
        zone.classList.remove("dropzone--over");
        var files = event.dataTransfer && event.dataTransfer.files;
        if (!files || !files.length) return;
        try {
          var transfer = new DataTransfer();
          transfer.items.add(files[0]);
          fileInput.files = transfer.files;
        } catch (e) {
          fileInput.files = files;
        }
        showFile(fileInput.files[0] || null);
      });
    }
    form.addEventListener("change", function (event) {
      if (event.target.name === "source" && event.target.value && fileInput && fileInput.value) {
        fileInput.value = "";
        showFile(null);
      }
    });

    // Availability: when no online server holds the model and every file chosen (its
    // LoRAs, an upscale model), say so by the submit button. The server renders the
    // same sentence for the first values; this keeps it true as choices change.
    var availabilityNode = document.getElementById("availability-info");
    var availability = availabilityNode ? JSON.parse(availabilityNode.textContent) : null;
    var warning = form.querySelector("[data-availability-warning]");
    function syncAvailability() {
      if (!availability || !warning) return;
      var chosen = [];
      var common = null;
      Object.keys(availability.fields).forEach(function (name) {
        var field = el(name);
        if (!field || field.value === undefined) return;
        var entry = (availability.files[availability.fields[name]] || {})[field.value];
        if (!entry || chosen.indexOf(entry.title) !== -1) return;
        chosen.push(entry.title);
        common = common === null ? entry.backends.slice() : common.filter(function (id) {
          return entry.backends.indexOf(id) !== -1;
        });
      });
      var missing = common !== null && common.length === 0;
      warning.hidden = !missing;
      if (missing) warning.textContent = warning.dataset.message.replace("%(names)s", chosen.join(warning.dataset.separator));
    }
    form.addEventListener("change", syncAvailability);
    form.addEventListener("input", syncAvailability);
    syncAvailability();

    // Ctrl+Enter (Cmd+Enter on a Mac) submits from anywhere in the form.
    form.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (form.requestSubmit) form.requestSubmit();
        else form.submit();
      }
    });

    // Size: a preset fills width/height; the custom pair shows only for "custom".
    var size = el("size");
    var pair = form.querySelector("[data-custom-size]");
    function syncSize() {
      if (!size || !pair) return;
      var custom = size.value === "custom";
      var hasErrors = pair.querySelector(".field--error");
      pair.hidden = !custom && !hasErrors;
      if (!custom) {
        var parts = size.value.split("x");
        el("width").value = parts[0];
        el("height").value = parts[1];
      }
    }
    if (size) {
      size.addEventListener("change", syncSize);
      syncSize();
    }

    // Model: show its description, and move settings still at the old model's
    // defaults to the new model's (values the user changed are left alone).
    var model = el("model");
    var description = form.querySelector("[data-model-description]");
    if (model && model.tagName === "SELECT") {
      var previous = info[model.value];
      model.addEventListener("change", function () {
        var next = info[model.value];
        if (description) description.textContent = next ? next.description : "";
        if (previous && next) {
          ["steps", "cfg", "sampler", "scheduler"].forEach(function (name) {
            var field = el(name);
            if (field && String(field.value) === String(previous[name])) field.value = next[name];
          });
          if (size && size.value === previous.width + "x" + previous.height) {
            var wanted = next.width + "x" + next.height;
            var option = Array.prototype.find.call(size.options, function (o) { return o.value === wanted; });
            size.value = option ? wanted : "custom";
            el("width").value = next.width;
            el("height").value = next.height;
            syncSize();
          }
        }
        previous = next;
      });
    }

    loadSettingsFromPictures(form, el, syncSize);
  }

  // Settings from a picture: a PNG picked with the loader's button, or dropped anywhere
  // on the page but a picture drop zone, goes to the API, which reads the parameters it
  // carries; the fields it names are filled in (the model first: its change moves the
  // settings still at its defaults, which the picture's values then replace).
  function loadSettingsFromPictures(form, el, syncSize) {
    var loader = form.querySelector("[data-params-loader]");
    if (!loader || !window.fetch || !window.FormData) return;
    loader.hidden = false;
    var status = loader.querySelector("[data-params-status]");
    var picker = loader.querySelector("[data-params-file]");
    var token = form.querySelector("input[name=csrfmiddlewaretoken]");

    function say(text, failed) {
      status.textContent = text;
      status.classList.toggle("params-loader__status--error", !!failed);
    }
    function set(name, value) {
      var field = el(name);
      if (!field || value === null || value === undefined || field instanceof RadioNodeList) return false;
      value = String(value);
      if (field.tagName === "SELECT" &&
          !Array.prototype.some.call(field.options, function (o) { return o.value === value; })) return false;
      field.value = value;
      return true;
    }
    function fill(params, seedText) {
      var model = el("model");
      if (params.model_name && model && set("model", params.model_name)) {
        model.dispatchEvent(new Event("change", { bubbles: true }));
      }
      ["prompt", "negative_prompt", "steps", "cfg", "sampler", "scheduler", "denoise"].forEach(function (name) {
        set(name, params[name]);
      });
      var size = el("size");
      if (params.width && params.height && size) {
        if (!set("size", params.width + "x" + params.height)) size.value = "custom";
        set("width", params.width);
        set("height", params.height);
        syncSize();
      }
      if (seedText !== null && set("seed", seedText) && el("seed_random")) el("seed_random").checked = false;
      form.dispatchEvent(new Event("change"));
    }
    function load(file) {
      if (!file) return;
      say(loader.dataset.loading, false);
      var body = new FormData();
      body.append("image", file);
      fetch(loader.dataset.url, {
        method: "POST", body: body, credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": token ? token.value : "" },
      }).then(function (response) {
        return response.text().then(function (text) {
          var data = JSON.parse(text);
          if (!response.ok) {
            say((data.error && data.error.message) || loader.dataset.failed, true);
            return;
          }
          // Seeds go up to 2**63: past 2**53 a JavaScript number would change them, so
          // the digits are taken from the answer's text.
          var seed = /"seed":\s*(-?\d+)/.exec(text);
          fill(data, seed ? seed[1] : null);
          say(loader.dataset.loaded, false);
        });
      }).catch(function () { say(loader.dataset.failed, true); });
    }

    picker.addEventListener("change", function () {
      load(picker.files && picker.files[0]);
      picker.value = "";
    });
    function carriesFiles(event) {
      return event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types || [], "Files") !== -1;
    }
    function onZone(event) {
      return event.target.closest && event.target.closest(".dropzone");
    }
    var root = document.documentElement;
    ["dragenter", "dragover"].forEach(function (type) {
      document.addEventListener(type, function (event) {
        if (!carriesFiles(event) || onZone(event)) return;
        event.preventDefault();  // without it the browser opens the file instead
        root.classList.add("page-drop-over");
      });
    });
    ["dragleave", "dragend"].forEach(function (type) {
      document.addEventListener(type, function (event) {
        if (!event.relatedTarget) root.classList.remove("page-drop-over");
      });
    });
    document.addEventListener("drop", function (event) {
      root.classList.remove("page-drop-over");
      if (!carriesFiles(event) || onZone(event)) return;
      event.preventDefault();
      load(event.dataTransfer.files[0]);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
