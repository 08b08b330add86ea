// Following a running task through its state.json, shared by the task page (task.js)
// and the workspace's cards (workspace.js).
//
// Polling stays cheap: each request sends the last answer's ETag (If-None-Match), so an
// unchanged task costs a 304 with no body; the pause grows while nothing changes (0.5 s,
// doubling up to 5 s) and drops back to 0.5 s on a change; a hidden tab does not poll at
// all and asks at once when shown again. The live frame is fetched only when its version
// (its URL) changed, as a blob swapped in once loaded.
//
//   EaselTaskPoll.follow(stateUrl, {onState(state), onEnd(), onError()}) → {stop()}
//   EaselTaskPoll.preview(img) → {show(url)}
(function () {
  "use strict";

  var MIN_DELAY = 500;
  var MAX_DELAY = 5000;

  // handlers.manual: the page hears of changes from the event stream (task_events.js),
  // so it asks only when told to (`poke`), until `auto` turns the polling on (the stream
  // failed).
  function follow(stateUrl, handlers) {
    var etag = null; // of the last state.json rendered
    var delay = MIN_DELAY;
    var timer = null;
    var inFlight = false;
    var again = false; // poked while a request was on its way: ask once more after it
    var finished = false;
    var manual = !!handlers.manual;

    function schedule() {
      window.clearTimeout(timer);
      timer = null;
      if (again) { again = false; poll(); return; }
      if (finished || document.hidden || manual) return; // shown again: visibilitychange asks at once
      timer = window.setTimeout(poll, delay);
    }

    function slower() {
      delay = Math.min(delay * 2, MAX_DELAY);
    }

    function stop() {
      finished = true;
      window.clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisibility);
    }

    function end() {
      stop();
      if (handlers.onEnd) handlers.onEnd();
    }

    function poll() {
      if (inFlight) { again = true; return; }
      if (finished || document.hidden) return;
      inFlight = true;
      window.clearTimeout(timer);
      var headers = { Accept: "application/json" };
      if (etag) headers["If-None-Match"] = etag;
      // no-store: the browser neither answers from its cache nor adds validators of its
      // own, so a 304 reaches this script as a 304.
      fetch(stateUrl, { credentials: "same-origin", headers: headers, cache: "no-store" })
        .then(function (response) {
          if (response.status === 304) return { unchanged: true };
          if (response.status === 404) return { gone: true }; // deleted (perhaps in another tab)
          if (!response.ok) throw new Error("status " + response.status);
          var tag = response.headers.get("ETag");
          return response.json().then(function (state) { return { state: state, etag: tag }; });
        })
        .then(function (answer) {
          inFlight = false;
          if (finished) return;
          if (answer.gone) { end(); return; } // the server says so
          if (answer.unchanged) {
            slower();
            schedule();
            return;
          }
          var state = answer.state;
          if (state.status !== "pending" && state.status !== "processing") { end(); return; }
          etag = answer.etag;
          delay = MIN_DELAY;
          if (handlers.onState) handlers.onState(state);
          schedule();
        })
        .catch(function () {
          inFlight = false;
          if (finished) return;
          // The next answer (a 200: no ETag sent) writes the panel over.
          etag = null;
          if (handlers.onError) handlers.onError();
          slower();
          schedule();
        });
    }

    function onVisibility() {
      if (document.hidden) {
        window.clearTimeout(timer);
        timer = null;
        return;
      }
      delay = MIN_DELAY;
      poll();
    }

    document.addEventListener("visibilitychange", onVisibility);
    poll();
    return {
      stop: stop,
      poke: function () { delay = MIN_DELAY; poll(); },
      auto: function () { manual = false; delay = MIN_DELAY; poll(); }
    };
  }

  // Fetch the frame as a blob and swap it in only once loaded: no flicker, no broken
  // image while the next frame is on its way, never two fetches at once. Its URL names
  // its version, so the browser may keep it; a frame already shown is never asked again.
  function preview(img) {
    var wanted = null; // the newest frame's URL, as state.json gave it
    var shown = null; // the URL of the frame on screen
    var busy = false;
    var objectUrl = null;

    function refresh() {
      if (busy || !img || !wanted || wanted === shown) return;
      busy = true;
      var url = wanted;
      fetch(url, { credentials: "same-origin" })
        .then(function (response) {
          // 204: no frame any more (the task ended a moment ago).
          if (!response.ok || response.status === 204) throw new Error("no preview");
          return response.blob();
        })
        .then(function (blob) {
          var next = URL.createObjectURL(blob);
          img.src = next;
          if (objectUrl) URL.revokeObjectURL(objectUrl);
          objectUrl = next;
          shown = url;
        })
        .catch(function () { /* the task ended a moment ago: the finished view follows */ })
        .then(function () {
          busy = false;
          if (shown === url) refresh(); // a newer frame came meanwhile
        });
    }

    return {
      show: function (url) {
        wanted = url || null;
        refresh();
      }
    };
  }

  // The live words of one answer, written into a panel: the badge, the stage, the queue,
  // the progress bar and its line, the status message. Nodes missing are skipped.
  function render(state, nodes) {
    function setText(node, text) {
      if (node && node.textContent !== text) node.textContent = text;
    }
    if (nodes.badge) {
      nodes.badge.className = "badge badge--" + state.status;
      setText(nodes.badge, state.status_label);
    }
    setText(nodes.statusText, state.status_label);
    setText(nodes.stage, state.stage || "");
    setText(nodes.queue, state.queue_text || "");
    setText(nodes.progressText, state.line || "");
    setText(nodes.message, state.message || "");
    var p = state.progress || {};
    var progress = nodes.progress;
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

  // A step from the event stream, drawn without asking the server: the bar and the line
  // under it (`step` is the translated "Step %(value)s of %(max)s").
  function step(p, nodes, stepLabel) {
    if (!p.max) return;
    if (nodes.progress) {
      nodes.progress.max = p.max;
      nodes.progress.value = p.value;
      nodes.progress.textContent = Math.round(p.fraction * 100) + "%";
    }
    if (nodes.progressText && stepLabel) {
      nodes.progressText.textContent = stepLabel.replace("%(value)s", p.value).replace("%(max)s", p.max);
    }
  }

  // Pushed updates for one panel (a task page's, a workspace card's) through a stream
  // from task_events.js: steps and frames drawn from the events, state.json asked when the
  // stage changes and, while the task waits, now and then (its place in the queue moves
  // with other tasks, which no event of its own tells); polling when the stream fails.
  var QUEUE_REFRESH_MS = 5000;

  //   options: stepLabel, waiting() (the last state.json said "pending"), onEnd(data, kind)
  //   → {close()}
  function pushed(events, taskId, follower, nodes, preview, options) {
    var lastNode = null;
    var queueTimer = window.setInterval(function () {
      if (options.waiting() && !document.hidden) follower.poke();
    }, QUEUE_REFRESH_MS);
    function done() { window.clearInterval(queueTimer); }
    var watched = events.watch(taskId, {
      onOpen: follower.poke, // what changed before the stream opened
      onState: follower.poke,
      onProgress: function (p) {
        step(p, nodes, options.stepLabel);
        if (p.node !== lastNode) {
          lastNode = p.node;
          follower.poke(); // the words of the new stage
        }
      },
      onPreview: function (data) { preview.show(data.url); }, // a versioned URL: fetched once
      onEnd: function (data, kind) { done(); follower.stop(); options.onEnd(data, kind); },
      onFallback: function () { done(); follower.auto(); }
    });
    // The panel goes (a card replaced or removed): nothing more for it.
    return { close: function () { done(); watched.close(); follower.stop(); } };
  }

  window.EaselTaskPoll = { follow: follow, preview: preview, render: render, step: step, pushed: pushed };
})();
