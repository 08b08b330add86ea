// The task page: follows the running task through its state.json (the live panel's
// words, the status, the live frame's versioned URL), so a reload or a second tab always
// shows the current state. The page works without it: the server renders the same panel.
//
// The polling itself (ETag and 304, the back-off from 0.5 s to 5 s, nothing while the
// tab is hidden, the frame fetched only when its version changed) is task_poll.js's,
// shared with the workspace's cards on the generate page. When the task ends, the page
// reloads to show the server-rendered result (images or error) and polls no more.
(function () {
  "use strict";

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

    window.EaselTaskPoll.follow(config.stateUrl, {
      // The panel, all from one answer of state.json: the words cannot disagree.
      onState: function (state) {
        window.EaselTaskPoll.render(state, nodes);
        preview.show(state.preview_url);
      },
      onEnd: function () { window.location.reload(); },
      // Said on the panel; the next answer writes it over.
      onError: function () {
        if (nodes.message && nodes.message.textContent !== labels.offline) nodes.message.textContent = labels.offline;
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
