// The task page's pushed updates: one EventSource on /api/v1/events, the signed-in
// user's task events (generation/api/events.py). task.js asks for it and keeps its own
// polling for when the browser has no EventSource or the stream keeps failing.
(function () {
  "use strict";

  // Errors in a row (each reconnect the browser tries counts one) before polling takes over.
  var MAX_FAILURES = 3;

  function follow(options) {
    if (typeof window.EventSource !== "function" || !options.url) return null;
    var done = false;
    var failures = 0;
    var source = new window.EventSource(options.url);

    function stop() {
      done = true;
      source.close();
    }

    function on(kind, handler) {
      source.addEventListener(kind, function (event) {
        if (done) return;
        var data;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        // One stream carries all of the user's tasks: only this page's task counts.
        if (data && data.task_id === options.taskId) handler(data, kind);
      });
    }

    source.addEventListener("open", function () {
      failures = 0;
      if (options.onOpen) options.onOpen();
    });
    source.addEventListener("error", function () {
      if (done) return;
      failures += 1;
      // The browser reconnects by itself (with Last-Event-ID, so no ending is lost) unless
      // the answer was not a stream (401, 5xx): then, or after a few failures, poll.
      if (source.readyState === window.EventSource.CLOSED || failures >= MAX_FAILURES) {
        stop();
        options.onFallback();
      }
    });
    on("queued", options.onState);
    on("started", options.onState);
    on("progress", options.onProgress);
    on("preview", options.onPreview);
    ["completed", "failed", "cancelled"].forEach(function (kind) {
      on(kind, function (data) {
        stop();
        options.onEnd(data, kind);
      });
    });
    return { close: stop };
  }

  window.EaselTaskEvents = { follow: follow };
})();
