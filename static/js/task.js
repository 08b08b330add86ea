// The task page: follows the running task through its state.json (the live panel's
// words, the status, the live frame's versioned URL), so a reload or a second tab always
// shows the current state. The page works without it: the server renders the same panel.
//
// With the event stream (task_events.js, when the browser has EventSource), state.json
// is asked only when an event says this task changed (and now and then while it waits);
// without it, or once the stream keeps failing, it is polled. The polling itself (ETag
// and 304, the back-off from 0.5 s to 5 s, nothing while the tab is hidden, the frame
// fetched only when its version changed) and the pushed updates are task_poll.js's,
// shared with the workspace's cards on the generate page. When the task ends, the page
// reloads to show the server-rendered result.
(function () {
  "use strict";

  function init() {
    var configNode = document.getElementById("task-poll");
    var live = document.querySelector("[data-task-live]");
    if (!configNode || !live || !window.EaselTaskPoll) return;
    var config = JSON.parse(configNode.textContent);
    if (!config.active || !config.stateUrl) return;
    var labels = config.labels;
    var poll = window.EaselTaskPoll;

    var nodes = {
      progress: live.querySelector("[data-progress]"),
      progressText: live.querySelector("[data-progress-text]"),
      message: live.querySelector("[data-status-message]"),
      badge: document.querySelector("[data-status-badge]"),
      statusText: document.querySelector("[data-status-text]"),
      stage: live.querySelector("[data-stage]"),
      queue: live.querySelector("[data-queue]")
    };
    var preview = poll.preview(live.querySelector("[data-preview]"));

    // A form sent from the page (cancel, retry, delete) navigates by itself, to a page with
    // its message: the end it causes must not reload this one in the middle of that (the
    // reload would replace the answer, and its message would be lost).
    var leaving = false;
    document.addEventListener("submit", function (event) {
      if (!event.defaultPrevented) leaving = true;
    });
    function reload() {
      if (!leaving) window.location.reload();
    }

    var events = window.EaselTaskEvents && config.eventsUrl ? window.EaselTaskEvents.open(config.eventsUrl) : null;
    var waiting = false;
    var follower = poll.follow(config.stateUrl, {
      manual: !!events,
      // The panel, all from one answer of state.json: the words cannot disagree.
      onState: function (state) {
        waiting = state.status === "pending";
        poll.render(state, nodes);
        preview.show(state.preview_url);
      },
      onEnd: reload,
      // Said on the panel; the next answer writes it over.
      onError: function () {
        if (nodes.message && nodes.message.textContent !== labels.offline) nodes.message.textContent = labels.offline;
      }
    });
    if (!events) return;
    poll.pushed(events, config.taskId, follower, nodes, preview, {
      stepLabel: labels.step,
      waiting: function () { return waiting; },
      onEnd: function () { events.close(); reload(); }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
