// The form widgets' helpers (generation/web/widgets.py): a slider beside a number box,
// a filter box above a long select, LoRA rows that hide until asked for, a drop zone
// for pictures. Each works without this file; the words it writes come from the
// widget's data-* attributes (translated by the server).
(function () {
  "use strict";

  function changed(element) {
    element.dispatchEvent(new Event("input", { bubbles: true }));
    element.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // --- RangeNumberWidget: the number box is the value; the slider follows it. ---
  function initRangeNumber(box) {
    var number = box.querySelector("input[type=number]");
    if (!number || box.querySelector("input[type=range]")) return;
    var slider = document.createElement("input");
    slider.type = "range";
    slider.className = "range-number__slider";
    ["min", "max", "step"].forEach(function (name) {
      if (number.hasAttribute(name)) slider.setAttribute(name, number.getAttribute(name));
    });
    // The number box carries the label; the slider repeats it for pointers only.
    slider.tabIndex = -1;
    slider.setAttribute("aria-hidden", "true");
    slider.disabled = number.disabled;
    function fromNumber() {
      var value = parseFloat(number.value);
      if (!isNaN(value)) slider.value = String(value);
    }
    slider.addEventListener("input", function () {
      number.value = slider.value;
      number.dispatchEvent(new Event("input", { bubbles: true }));
    });
    slider.addEventListener("change", function () {
      number.dispatchEvent(new Event("change", { bubbles: true }));
    });
    number.addEventListener("input", fromNumber);
    number.addEventListener("change", fromNumber);
    fromNumber();
    box.classList.add("range-number--ready");
    box.insertBefore(slider, number);
  }

  // --- SearchableSelectWidget: a filter box when the list is long. ---
  var filterCount = 0;
  function initSearchableSelect(box) {
    var select = box.querySelector("select");
    if (!select || box.querySelector(".searchable-select__filter")) return;
    var threshold = parseInt(box.dataset.threshold || "8", 10);
    if (select.options.length <= threshold) return;
    filterCount += 1;
    var filter = document.createElement("input");
    filter.type = "search";
    filter.className = "searchable-select__filter";
    filter.id = (select.id || "searchable-select-" + filterCount) + "_filter";
    filter.placeholder = box.dataset.filterPlaceholder || "";
    filter.setAttribute("aria-label", box.dataset.filterLabel || "");
    filter.setAttribute("aria-controls", select.id || "");
    filter.autocomplete = "off";
    var status = document.createElement("span");
    status.className = "searchable-select__status help";
    status.setAttribute("aria-live", "polite");
    status.hidden = true;
    var matches = [];
    filter.addEventListener("input", function () {
      matches = [];
      var words = filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
      Array.prototype.forEach.call(select.options, function (option) {
        var text = (option.textContent + " " + option.value).toLowerCase();
        var hit = words.every(function (w) { return text.indexOf(w) !== -1; });
        // "None" and the current choice stay, so the select never shows a hidden value.
        option.hidden = !(hit || option.value === "" || option.selected);
        if (hit && option.value !== "") matches.push(option);
      });
      Array.prototype.forEach.call(select.querySelectorAll("optgroup"), function (group) {
        group.hidden = !Array.prototype.some.call(group.children, function (o) { return !o.hidden; });
      });
      status.hidden = matches.length > 0 || !words.length;
      status.textContent = status.hidden ? "" : box.dataset.noMatch || "";
    });
    // Enter in the filter picks the first match instead of sending the form.
    filter.addEventListener("keydown", function (event) {
      if (event.key !== "Enter") return;
      event.preventDefault();
      var first = filter.value.trim() ? matches[0] : null;
      if (first && select.value !== first.value) {
        select.value = first.value;
        changed(select);
      }
      select.focus();
    });
    box.insertBefore(filter, select);
    box.appendChild(status);
    box.classList.add("searchable-select--ready");
  }

  // --- LoraRowsWidget: filled rows show; the others wait behind "Add a LoRA". ---
  function initLoraRows(box) {
    if (box.dataset.ready) return;
    box.dataset.ready = "1";
    var rows = Array.prototype.slice.call(box.querySelectorAll("[data-lora-row]"));
    var add = box.querySelector("[data-lora-add]");
    var fallback = box.dataset.defaultStrength || "1";
    function select(row) { return row.querySelector("select"); }
    function strength(row) { return row.querySelector("input[type=number]"); }
    function update() {
      var hidden = rows.filter(function (row) { return row.hidden; });
      add.hidden = hidden.length === 0;
      rows.forEach(function (row) { row.querySelector("[data-lora-remove]").hidden = false; });
    }
    function copy(from, to) {
      select(to).value = from ? select(from).value : "";
      strength(to).value = from ? strength(from).value : fallback;
      changed(select(to));
      changed(strength(to));
    }
    rows.forEach(function (row, index) {
      var filled = select(row).value !== "";
      row.hidden = !filled && index > 0;
      row.querySelector("[data-lora-remove]").addEventListener("click", function () {
        // The rows below move up one, so the rows shown stay together; the last one
        // shown is then cleared and hidden (unless it is the only one: cleared only).
        var visible = rows.filter(function (r) { return !r.hidden; });
        var at = visible.indexOf(row);
        for (var i = at; i < visible.length - 1; i++) copy(visible[i + 1], visible[i]);
        var last = visible[visible.length - 1];
        copy(null, last);
        if (visible.length > 1) last.hidden = true;
        update();
        (add.hidden ? select(row) : add).focus();
      });
    });
    // A first empty row with filled ones after it is hidden too (nothing to show there).
    if (rows.some(function (r, i) { return i > 0 && !r.hidden; }) && select(rows[0]).value === "") rows[0].hidden = true;
    add.addEventListener("click", function () {
      var next = rows.find(function (row) { return row.hidden; });
      if (!next) return;
      next.hidden = false;
      update();
      select(next).focus();
    });
    update();
  }

  // --- ImageDropWidget: drop, paste or click; a preview of the chosen picture. ---
  var drops = [];
  function initImageDrop(zone) {
    var input = zone.querySelector("input[type=file]");
    if (!input || zone.dataset.ready) return;
    zone.dataset.ready = "1";
    var preview = zone.querySelector("[data-image-drop-preview]");
    var hint = zone.querySelector("[data-image-drop-hint]");
    var error = zone.querySelector("[data-image-drop-error]");
    var accepted = (input.getAttribute("accept") || "").split(",").map(function (t) { return t.trim(); }).filter(Boolean);
    var url = null;
    hint.hidden = false;
    zone.classList.add("image-drop--ready");

    function show() {
      var file = input.files && input.files[0];
      if (url) URL.revokeObjectURL(url);
      url = file ? URL.createObjectURL(file) : null;
      preview.hidden = !file;
      if (file) preview.src = url; else preview.removeAttribute("src");
    }
    function take(files) {
      var file = Array.prototype.find.call(files || [], function (f) {
        return !accepted.length || accepted.indexOf(f.type) !== -1;
      });
      error.hidden = !!file;
      error.textContent = file ? "" : zone.dataset.refused || "";
      if (!file) return false;
      var transfer = new DataTransfer();
      transfer.items.add(file);
      input.files = transfer.files;
      changed(input);
      return true;
    }
    input.addEventListener("change", function () {
      if (input.files && input.files[0]) {
        error.hidden = true;
        error.textContent = "";
      }
      show();
    });
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("dropzone--over");
      });
    });
    ["dragleave", "dragend", "drop"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("dropzone--over"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      take(event.dataTransfer && event.dataTransfer.files);
    });
    // A click anywhere in the zone chooses a file, as a click on the input does.
    zone.addEventListener("click", function (event) {
      if (event.target === input || event.target.closest("a, button, label")) return;
      input.click();
    });
    drops.push({ zone: zone, take: take });
    show();
  }

  // Paste: into the drop zone holding the focus, else the page's only one.
  document.addEventListener("paste", function (event) {
    var files = event.clipboardData && event.clipboardData.files;
    if (!files || !files.length || !drops.length) return;
    var active = document.activeElement;
    var target = drops.find(function (d) { return active && d.zone.contains(active); });
    if (!target && drops.length === 1) target = drops[0];
    if (!target) return;
    event.preventDefault();
    target.take(files);
  });

  function init(root) {
    root.querySelectorAll("[data-range-number]").forEach(initRangeNumber);
    root.querySelectorAll("[data-searchable-select]").forEach(initSearchableSelect);
    root.querySelectorAll("[data-lora-rows]").forEach(initLoraRows);
    root.querySelectorAll("[data-image-drop]").forEach(initImageDrop);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { init(document); });
  else init(document);
})();
