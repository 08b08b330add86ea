// The task page: follows the task, from the event stream when the browser has
// EventSource (task_events.js), else once a second, so a reload or a second tab always
// shows the current state. The status API says whether the task is still running and
// whether a live frame exists; the page's state.json gives the panel's words (the same
// function the server rendered them with). When the task ends, the page reloads to show
// the server-rendered result (images or error).
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
    var messageText = live.querySelector("[data-status-message]");
    var preview = live.querySelector("[data-preview]");
    var badge = document.querySelector("[data-status-badge]");
    var statusText = document.querySelector("[data-status-text]");
    var stageText = live.querySelector("[data-stage]");
    var queueText = live.querySelector("[data-queue]");
    var stateBusy = false;
    var previewBusy = false;
    var previewObjectUrl = null;
    var timer = null;
    var inFlight = false;

    function setText(node, text) {
      if (node && node.textContent !== text) node.textContent = text;
    }

    // The panel, all from one answer of state.json: the words cannot disagree.
    function renderState(state) {
      if (badge) {
        badge.className = "badge badge--" + state.status;
        setText(badge, state.status_label);
      }
      setText(statusText, state.status_label);
      setText(stageText, state.stage || "");
      setText(queueText, state.queue_text || "");
      setText(progressText, state.line || "");
      setText(messageText, state.message || "");
      var p = state.progress || {};
      if (progress) {
        if (p.max) {
          progress.max = p.max;
          progress.value = p.value;
          setText(progress, p.percent + "%");
        } else if (progress.hasAttribute("value")) {
          // Nothing to count (waiting, or a node without steps): indeterminate.
          progress.removeAttribute("value");
          setText(progress, "");
        }
      }
    }

    function refreshState() {
      if (stateBusy || !config.stateUrl) return;
      stateBusy = true;
      fetch(config.stateUrl, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (state) {
          if (state && (state.status === "pending" || state.status === "processing")) renderState(state);
        })
        .catch(function () { /* the next poll tries again */ })
        .then(function () { stateBusy = false; });
    }

    // Fetch the frame as a blob and swap it in only once loaded: no flicker, no broken
    // image while the next frame is on its way, never two fetches at once. Asked only
    // when the status API says a frame is stored (never a 404 before the first one).
    function refreshPreview() {
      if (previewBusy || !preview) return;
      previewBusy = true;
      var url = config.previewUrl + "?t=" + Date.now();
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("no preview");
          return response.blob();
        })
        .then(function (blob) {
          var objectUrl = URL.createObjectURL(blob);
          preview.src = objectUrl;
          if (previewObjectUrl) URL.revokeObjectURL(previewObjectUrl);
          previewObjectUrl = objectUrl;
        })
        .catch(function () { /* the task ended a moment ago: the reload follows */ })
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
          if (task.has_preview) refreshPreview();
          refreshState();
          schedule();
        })
        .catch(function () {
          inFlight = false;
          setText(messageText, labels.offline);
          schedule();
        });
    }

    // --- pushed updates (task_events.js), the polling above as the fallback ---------

    var streaming = false;
    var lastNode = null;

    // A step from the stream: the bar and its line here, without asking the server; the
    // words of a new stage (a node name, a queue place) from state.json, once each.
    function renderProgress(p) {
      if (progress && p.max) {
        progress.max = p.max;
        progress.value = p.value;
        setText(progress, Math.round(p.fraction * 100) + "%");
      }
      if (p.max && labels.step) {
        setText(progressText, labels.step.replace("%(value)s", p.value).replace("%(max)s", p.max));
      }
      if (p.node !== lastNode) {
        lastNode = p.node;
        refreshState();
      }
    }

    // Once the stream is open: what changed before it opened (the page was rendered
    // earlier), then only what the stream says.
    function checkOnce() {
      fetch(config.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (response.status === 404) window.location.reload();
          return response.ok ? response.json() : null;
        })
        .then(function (task) {
          if (!task) return;
          if (task.status !== "pending" && task.status !== "processing") window.location.reload();
          else {
            if (task.has_preview) refreshPreview();
            refreshState();
          }
        })
        .catch(function () { /* the stream carries on */ });
    }

    var stream = window.EaselTaskEvents && window.EaselTaskEvents.follow({
      url: config.eventsUrl,
      taskId: config.taskId,
      onOpen: checkOnce,
      onState: function () { refreshState(); },
      onProgress: renderProgress,
      onPreview: function () { refreshPreview(); },
      onEnd: function () { window.location.reload(); },
      onFallback: function () {
        streaming = false;
        poll();
      }
    });
    streaming = !!stream;

    // A hidden tab keeps polling through the browser's own timer throttling; coming
    // back shows the current state at once.
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        if (streaming) refreshState();
        else poll();
      }
    });
    if (!streaming) poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
