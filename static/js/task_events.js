// Pushed updates: one EventSource on /api/v1/events per page, the signed-in user's task
// events (generation/api/events.py), handed to whoever watches each task. The task page
// (task.js) watches its task; the workspace (workspace.js) watches each running card and
// hears of runs created elsewhere (another tab or browser of the same user). Both keep
// their own polling for when the browser has no EventSource or the stream keeps failing.
//
//   EaselTaskEvents.open(url) → {watch(taskId, handlers) → {close()}, onCreated(fn), close()}
//     handlers: onOpen(), onState(data), onProgress(data), onPreview(data),
//               onEnd(data, kind), onFallback()
(function () {
  "use strict";

  // Errors in a row (each reconnect the browser tries counts one) before polling takes over.
  var MAX_FAILURES = 3;
  var ENDINGS = ["completed", "failed", "cancelled"];

  function open(url) {
    if (typeof window.EventSource !== "function" || !url) return null;
    var watchers = {}; // task id → handlers
    var created = [];
    var failed = false;
    var failures = 0;
    var source = new window.EventSource(url);

    function each(fn) {
      Object.keys(watchers).forEach(function (id) { fn(watchers[id]); });
    }

    function close() {
      source.close();
    }

    function fallBack() {
      failed = true;
      close();
      var all = watchers;
      watchers = {};
      Object.keys(all).forEach(function (id) { all[id].onFallback(); });
    }

    function on(kind) {
      source.addEventListener(kind, function (event) {
        var data;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        if (!data) return;
        if (kind === "created") created.forEach(function (fn) { fn(data); });
        var watcher = watchers[data.task_id];
        if (!watcher) return;
        if (ENDINGS.indexOf(kind) !== -1) {
          delete watchers[data.task_id];
          watcher.onEnd(data, kind);
        } else if (kind === "progress") {
          watcher.onProgress(data);
        } else if (kind === "preview") {
          watcher.onPreview(data);
        } else if (kind !== "created") {
          watcher.onState(data);
        }
      });
    }

    source.addEventListener("open", function () {
      failures = 0;
      each(function (watcher) { if (watcher.onOpen) watcher.onOpen(); });
    });
    source.addEventListener("error", function () {
      if (failed) return;
      failures += 1;
      // The browser reconnects by itself (with Last-Event-ID, so no ending is lost) unless
      // the answer was not a stream (401, 429, 5xx): then, or after a few failures, poll.
      if (source.readyState === window.EventSource.CLOSED || failures >= MAX_FAILURES) fallBack();
    });
    ["created", "queued", "started", "progress", "preview"].concat(ENDINGS).forEach(on);

    return {
      watch: function (taskId, handlers) {
        if (failed) { // too late for this stream: poll from the start
          handlers.onFallback();
          return { close: function () {} };
        }
        watchers[taskId] = handlers;
        return { close: function () { if (watchers[taskId] === handlers) delete watchers[taskId]; } };
      },
      onCreated: function (fn) { created.push(fn); },
      close: close
    };
  }

  window.EaselTaskEvents = { open: open };
})();
