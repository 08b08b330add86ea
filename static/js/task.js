// The task page: follows the task through the status API once a second, so a reload
// or a second tab always shows the current state. When the task ends, the page
// reloads to show the server-rendered result (images or error).
(function () {
  "use strict";

  var INTERVAL = 1000;

  function init() {
    var configNode = document.getElementById("task-poll");
    var live = document.querySelector("[data-task-live]");
    if (!configNode || !live) return;
    var config = JSON.parse(configNode.textContent);
    if (!config.active) return;
    var labels = config.labels;

    var progress = live.querySelector("[data-progress]");
    var progressText = live.querySelector("[data-progress-text]");
    var nodeText = live.querySelector("[data-progress-node]");
    var messageText = live.querySelector("[data-status-message]");
    var preview = live.querySelector("[data-preview]");
    var badge = document.querySelector("[data-status-badge]");
    var stageText = live.querySelector("[data-stage]");
    var queueText = live.querySelector("[data-queue]");
    var stateBusy = false;
    var previewBusy = false;
    var previewObjectUrl = null;
    var timer = null;
    var inFlight = false;

    function format(template, values) {
      return template.replace(/%\((\w+)\)s/g, function (_, key) { return values[key]; });
    }

    function setText(node, text) {
      if (node && node.textContent !== text) node.textContent = text;
    }

    function render(task) {
      var p = task.progress || {};
      if (badge) {
        badge.className = "badge badge--" + task.status;
        setText(badge, labels.statuses[task.status] || task.status);
      }
      if (progress) {
        progress.max = p.max || 1;
        progress.value = p.max ? p.value : 0;
        progress.textContent = Math.round((p.fraction || 0) * 100) + "%";
      }
      var line;
      if (p.max) line = format(labels.step, { value: p.value, max: p.max });
      else line = task.status === "pending" ? labels.waiting : labels.starting;
      setText(progressText, line);
      setText(nodeText, p.node ? (labels.nodes[p.node] || p.node) : "");
      setText(messageText, task.status_message || "");
      if (task.status === "processing" && task.preview_url) refreshPreview();
      refreshState();
    }

    // The stage in words and the place in the queue (the page's own small endpoint).
    function refreshState() {
      if (stateBusy || !config.stateUrl) return;
      stateBusy = true;
      fetch(config.stateUrl, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (state) {
          if (!state) return;
          setText(stageText, state.stage || "");
          setText(queueText, state.queue_text || "");
        })
        .catch(function () { /* the next poll tries again */ })
        .then(function () { stateBusy = false; });
    }

    // Fetch the frame as a blob and swap it in only once loaded: no flicker, no broken
    // image while the next frame is on its way, never two fetches at once.
    function refreshPreview() {
      if (previewBusy || !preview) return;
      previewBusy = true;
      var url = config.previewUrl + "?t=" + Date.now();
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("no preview yet");
          return response.blob();
        })
        .then(function (blob) {
          var objectUrl = URL.createObjectURL(blob);
          preview.src = objectUrl;
          if (previewObjectUrl) URL.revokeObjectURL(previewObjectUrl);
          previewObjectUrl = objectUrl;
        })
        .catch(function () { /* 404 until the backend sends a first frame */ })
        .then(function () { previewBusy = false; });
    }

    function schedule() {
      window.clearTimeout(timer);
      timer = window.setTimeout(poll, INTERVAL);
    }

    function poll() {
      if (inFlight) return;
      inFlight = true;
      window.clearTimeout(timer);
      fetch(config.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (response.status === 404) {
            // Deleted (perhaps in another tab): let the server say so.
            window.location.reload();
            return null;
          }
          if (!response.ok) throw new Error("status " + response.status);
          return response.json();
        })
        .then(function (task) {
          inFlight = false;
          if (!task) return;
          if (task.status !== "pending" && task.status !== "processing") {
            window.location.reload();
            return;
          }
          render(task);
          schedule();
        })
        .catch(function () {
          inFlight = false;
          setText(messageText, labels.offline);
          schedule();
        });
    }

    // A hidden tab keeps polling through the browser's own timer throttling; coming
    // back shows the current state at once.
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) poll();
    });
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
