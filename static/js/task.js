// The task page: follows the running task through its state.json (the live panel's
// words, the status, the live frame's versioned URL), so a reload or a second tab always
// shows the current state. The page works without it: the server renders the same panel.
//
// Polling stays cheap: each request sends the last answer's ETag (If-None-Match), so an
// unchanged task costs a 304 with no body; the pause grows while nothing changes (0.5 s,
// doubling up to 5 s) and drops back to 0.5 s on a change; a hidden tab does not poll at
// all and asks at once when shown again; the frame is fetched only when its version (its
// URL) changed. When the task ends, the page reloads to show the server-rendered result
// (images or error) and polls no more.
(function () {
  "use strict";

  var MIN_DELAY = 500;
  var MAX_DELAY = 5000;

  function init() {
    var configNode = document.getElementById("task-poll");
    var live = document.querySelector("[data-task-live]");
    if (!configNode || !live) return;
    var config = JSON.parse(configNode.textContent);
    if (!config.active || !config.stateUrl) return;
    var labels = config.labels;

    var progress = live.querySelector("[data-progress]");
    var progressText = live.querySelector("[data-progress-text]");
    var messageText = live.querySelector("[data-status-message]");
    var preview = live.querySelector("[data-preview]");
    var badge = document.querySelector("[data-status-badge]");
    var statusText = document.querySelector("[data-status-text]");
    var stageText = live.querySelector("[data-stage]");
    var queueText = live.querySelector("[data-queue]");

    var etag = null; // of the last state.json rendered
    var delay = MIN_DELAY;
    var timer = null;
    var inFlight = false;
    var finished = false;
    var previewWanted = null; // the newest frame's URL, as state.json gave it
    var previewShown = null; // the URL of the frame on screen
    var previewBusy = false;
    var previewObjectUrl = null;

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

    // Fetch the frame as a blob and swap it in only once loaded: no flicker, no broken
    // image while the next frame is on its way, never two fetches at once. Its URL names
    // its version, so the browser may keep it; a frame already shown is never asked again.
    function refreshPreview() {
      if (previewBusy || !preview || !previewWanted || previewWanted === previewShown) return;
      previewBusy = true;
      var url = previewWanted;
      fetch(url, { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) throw new Error("no preview");
          return response.blob();
        })
        .then(function (blob) {
          var objectUrl = URL.createObjectURL(blob);
          preview.src = objectUrl;
          if (previewObjectUrl) URL.revokeObjectURL(previewObjectUrl);
          previewObjectUrl = objectUrl;
          previewShown = url;
        })
        .catch(function () { /* the task ended a moment ago: the reload follows */ })
        .then(function () {
          previewBusy = false;
          if (previewShown === url) refreshPreview(); // a newer frame came meanwhile
        });
    }

    function schedule() {
      window.clearTimeout(timer);
      timer = null;
      if (finished || document.hidden) return; // shown again: visibilitychange asks at once
      timer = window.setTimeout(poll, delay);
    }

    function slower() {
      delay = Math.min(delay * 2, MAX_DELAY);
    }

    function finish() {
      finished = true;
      window.clearTimeout(timer);
      window.location.reload();
    }

    function poll() {
      if (inFlight || finished || document.hidden) return;
      inFlight = true;
      window.clearTimeout(timer);
      var headers = { Accept: "application/json" };
      if (etag) headers["If-None-Match"] = etag;
      // no-store: the browser neither answers from its cache nor adds validators of its
      // own, so a 304 reaches this script as a 304.
      fetch(config.stateUrl, { credentials: "same-origin", headers: headers, cache: "no-store" })
        .then(function (response) {
          if (response.status === 304) return { unchanged: true };
          if (response.status === 404) return { gone: true }; // deleted (perhaps in another tab)
          if (!response.ok) throw new Error("status " + response.status);
          var tag = response.headers.get("ETag");
          return response.json().then(function (state) { return { state: state, etag: tag }; });
        })
        .then(function (answer) {
          inFlight = false;
          if (answer.gone) { finish(); return; } // the server says so
          if (answer.unchanged) {
            slower();
            schedule();
            return;
          }
          var state = answer.state;
          if (state.status !== "pending" && state.status !== "processing") { finish(); return; }
          etag = answer.etag;
          delay = MIN_DELAY;
          renderState(state);
          previewWanted = state.preview_url || null;
          refreshPreview();
          schedule();
        })
        .catch(function () {
          inFlight = false;
          // Said on the panel; the next answer (a 200: no ETag sent) writes it over.
          etag = null;
          setText(messageText, labels.offline);
          slower();
          schedule();
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (document.hidden) {
        window.clearTimeout(timer);
        timer = null;
        return;
      }
      delay = MIN_DELAY;
      poll();
    });
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
