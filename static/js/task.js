// The task page: follows the running task through its state.json (the live panel's
// words, the status, the live frame's versioned URL), so a reload or a second tab always
// shows the current state. The page works without it: the server renders the same panel.
//
// With the event stream (task_events.js, when the browser has EventSource), state.json
// is asked only when an event says this task changed; without it, or once the stream
// keeps failing, it is polled. The polling itself (ETag and 304, the back-off from 0.5 s
// to 5 s, nothing while the tab is hidden, the frame fetched only when its version
// changed) is task_poll.js's, shared with the workspace's cards on the generate page.
// When the task ends, the page reloads to show the server-rendered result.
(function () {
  "use strict";

  var QUEUE_REFRESH_MS = 5000;

  function init() {
    var configNode = document.getElementById("task-poll");
    var live = document.querySelector("[data-task-live]");
    if (!configNode || !live || !window.EaselTaskPoll) return;
    var config = JSON.parse(configNode.textContent);
    if (!config.active || !config.stateUrl) return;
    var labels = config.labels;

    var nodes = {
      progress: live.querySelector("[data-progress]"),
      progressText: live.querySelector("[data-progress-text]"),
      message: live.querySelector("[data-status-message]"),
      badge: document.querySelector("[data-status-badge]"),
      statusText: document.querySelector("[data-status-text]"),
      stage: live.querySelector("[data-stage]"),
      queue: live.querySelector("[data-queue]")
    };
    var preview = window.EaselTaskPoll.preview(live.querySelector("[data-preview]"));

    var pushed = !!(window.EaselTaskEvents && config.eventsUrl && typeof window.EventSource === "function");
    var waiting = false;
    var follower = window.EaselTaskPoll.follow(config.stateUrl, {
      manual: pushed,
      // The panel, all from one answer of state.json: the words cannot disagree.
      onState: function (state) {
        waiting = state.status === "pending";
        window.EaselTaskPoll.render(state, nodes);
        preview.show(state.preview_url);
      },
      onEnd: function () { window.location.reload(); },
      // Said on the panel; the next answer writes it over.
      onError: function () {
        if (nodes.message && nodes.message.textContent !== labels.offline) nodes.message.textContent = labels.offline;
      }
    });
    if (!pushed) return;
    // The queue moves as other tasks start, which no event of this task tells: while it
    // waits, its place and estimate are asked again now and then (a 304 when unchanged).
    var queueTimer = window.setInterval(function () {
      if (waiting && !document.hidden) follower.poke();
    }, QUEUE_REFRESH_MS);
    var lastNode = null;
    // A step from the stream: the bar and its line here, without asking the server; the
    // words of a new stage (a node name) from state.json, once per stage.
    function onProgress(p) {
      if (nodes.progress && p.max) {
        nodes.progress.max = p.max;
        nodes.progress.value = p.value;
        nodes.progress.textContent = Math.round(p.fraction * 100) + "%";
      }
      if (nodes.progressText && p.max && labels.step) {
        nodes.progressText.textContent = labels.step.replace("%(value)s", p.value).replace("%(max)s", p.max);
      }
      if (p.node !== lastNode) {
        lastNode = p.node;
        follower.poke();
      }
    }
    var stream = window.EaselTaskEvents.follow({
      url: config.eventsUrl,
      taskId: config.taskId,
      onOpen: follower.poke, // what changed before the stream opened
      onState: follower.poke,
      onProgress: onProgress,
      onPreview: function (data) { preview.show(data.url); }, // a versioned URL: fetched once
      onEnd: function () { window.clearInterval(queueTimer); follower.stop(); window.location.reload(); },
      onFallback: follower.auto
    });
    if (!stream) follower.auto();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
