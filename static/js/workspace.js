// The generate page as a workspace: the form is sent without leaving the page and each
// run's card, at the top of the results pane, follows its task until it swaps itself
// for the server-rendered finished card.
//
// Progressive enhancement: without this script the form POSTs and the view redirects to
// the new task, and the pane is the server's. With it, the same form (FormData, its CSRF
// token included) is posted asking for JSON; the view answers the new card's HTML
// (rendered and escaped by the server) or, with a 400, the form's errors, shown in place
// (the messages written as text). Several runs can be queued in a row.
(function () {
  "use strict";

  function init() {
    var form = document.querySelector("[data-generate-form]");
    var list = document.querySelector("[data-ws-results]");
    if (!form || !list || !window.fetch || !window.FormData || !window.EaselTaskPoll) return;
    var labelsNode = document.getElementById("workspace-labels");
    var labels = labelsNode ? JSON.parse(labelsNode.textContent) : {};
    var status = form.querySelector("[data-ws-status]");
    var summary = form.querySelector("[data-form-errors]");
    var submitButton = form.querySelector("button[type=submit]");
    var sending = 0;

    function say(text) {
      if (status) status.textContent = text || "";
    }

    // --- errors in place ------------------------------------------------------------

    function clearErrors() {
      form.querySelectorAll("[data-ws-error]").forEach(function (node) { node.remove(); });
      form.querySelectorAll(".field--error[data-ws-marked]").forEach(function (node) {
        node.classList.remove("field--error");
        node.removeAttribute("data-ws-marked");
      });
      // What the server rendered with the page (a no-script round) goes too.
      form.querySelectorAll(".field-errors").forEach(function (node) { node.remove(); });
      if (summary) summary.innerHTML = "";
    }

    function showErrors(answer) {
      clearErrors();
      // The summary is the server's rendering of the form's own messages (escaped there).
      if (summary && answer.summary) summary.innerHTML = answer.summary;
      var first = null;
      Object.keys(answer.fields || {}).forEach(function (name) {
        var entry = answer.fields[name];
        var input = (entry.id && document.getElementById(entry.id)) || form.elements.namedItem(name);
        if (input && input.length !== undefined && !input.tagName) input = input[0]; // radios
        var box = input && input.closest ? (input.closest(".field, fieldset") || input.parentNode) : null;
        var ul = document.createElement("ul");
        ul.className = "field-errors";
        ul.setAttribute("data-ws-error", "");
        entry.messages.forEach(function (message) {
          var li = document.createElement("li");
          li.textContent = message;
          ul.appendChild(li);
        });
        if (box) {
          if (!box.classList.contains("field--error")) {
            box.classList.add("field--error");
            box.setAttribute("data-ws-marked", "");
          }
          box.appendChild(ul);
          if (box.hidden) box.hidden = false;
        } else if (summary) {
          summary.appendChild(ul);
        }
        if (!first) first = box || ul;
      });
      var target = (summary && summary.firstElementChild) || first;
      if (target && target.scrollIntoView) target.scrollIntoView({ block: "center" });
    }

    // --- submitting -----------------------------------------------------------------

    form.addEventListener("submit", function (event) {
      if (event.defaultPrevented) return;
      event.preventDefault();
      var data = new FormData(form);
      sending += 1;
      form.setAttribute("aria-busy", "true");
      fetch(form.action, {
        method: "POST",
        body: data,
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-Requested-With": "XMLHttpRequest" }
      }).then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (type.indexOf("application/json") === -1) throw new Error("status " + response.status);
        return response.json().then(function (answer) { return { ok: response.ok, answer: answer }; });
      }).then(function (result) {
        if (!result.ok) {
          showErrors(result.answer);
          say("");
          return;
        }
        clearErrors();
        addCard(result.answer.card);
        say(labels.sent);
      }).catch(function () {
        say(labels.failed);
      }).then(function () {
        sending -= 1;
        if (!sending) form.removeAttribute("aria-busy");
      });
      if (submitButton) submitButton.blur();
    });

    // --- the cards ------------------------------------------------------------------

    function fromHtml(html) {
      var holder = document.createElement("ul");
      holder.innerHTML = html.trim();
      return holder.querySelector("[data-ws-card]");
    }

    function addCard(html) {
      var card = fromHtml(html);
      if (!card) return;
      var same = list.querySelector('[data-ws-card][data-task-id="' + card.dataset.taskId + '"]');
      if (same) same.remove();
      list.insertBefore(card, list.firstChild);
      var empty = document.querySelector("[data-ws-empty]");
      if (empty) empty.hidden = true;
      var history = document.querySelector("[data-ws-history]");
      if (history) history.hidden = false;
      watch(card);
    }

    function watch(card) {
      var stateUrl = card.dataset.stateUrl;
      var cardUrl = card.dataset.cardUrl;
      if (!stateUrl || !cardUrl || card.hasAttribute("data-ws-watched")) return;
      card.setAttribute("data-ws-watched", "");
      var nodes = {
        badge: card.querySelector(".badge"),
        stage: card.querySelector("[data-stage]"),
        queue: card.querySelector("[data-queue]"),
        progress: card.querySelector("[data-progress]"),
        progressText: card.querySelector("[data-progress-text]"),
        message: card.querySelector("[data-status-message]")
      };
      var preview = window.EaselTaskPoll.preview(card.querySelector("[data-preview]"));
      window.EaselTaskPoll.follow(stateUrl, {
        onState: function (state) {
          window.EaselTaskPoll.render(state, nodes);
          preview.show(state.preview_url);
        },
        onError: function () {
          if (nodes.message) nodes.message.textContent = labels.offline;
        },
        onEnd: function () { finish(card, cardUrl); }
      });
    }

    // The finished card, as the server renders it (images, times, actions).
    function finish(card, cardUrl, attempt) {
      fetch(cardUrl, { credentials: "same-origin", headers: { Accept: "text/html" }, cache: "no-store" })
        .then(function (response) {
          if (response.status === 404) { card.remove(); return null; } // deleted meanwhile
          if (!response.ok) throw new Error("status " + response.status);
          return response.text();
        })
        .then(function (html) {
          if (html === null) return;
          var fresh = fromHtml(html);
          if (!fresh || !card.parentNode) return;
          card.parentNode.replaceChild(fresh, card);
          watch(fresh); // still running (a retry): it follows its task again
        })
        .catch(function () {
          var next = (attempt || 0) + 1;
          if (next < 6) window.setTimeout(function () { finish(card, cardUrl, next); }, 1000 * next);
        });
    }

    // A card's actions (vary the seed, share, cancel, delete) are done in place: the form
    // is posted asking for JSON and the answer is the card as it is now (or the new run's
    // card, or none once deleted), rendered by the server, with a line to say. Deleting
    // asks first (easel.js binds only the forms of the first render).
    list.addEventListener("submit", function (event) {
      var target = event.target;
      if (!target.matches) return;
      if (target.matches("form[data-ws-confirm]")) {
        if (!window.confirm(target.getAttribute("data-ws-confirm"))) {
          event.preventDefault();
          return;
        }
        if (!target.querySelector("input[name=confirm]")) {
          var input = document.createElement("input");
          input.type = "hidden";
          input.name = "confirm";
          input.value = "yes";
          target.appendChild(input);
        }
      }
      if (!target.matches("form[data-ws-action]")) return;
      event.preventDefault();
      var card = target.closest("[data-ws-card]");
      target.setAttribute("aria-busy", "true");
      fetch(target.action, {
        method: "POST",
        body: new FormData(target),
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-Requested-With": "XMLHttpRequest" }
      }).then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (type.indexOf("application/json") === -1) throw new Error("status " + response.status);
        return response.json();
      }).then(function (answer) {
        say(answer.message || "");
        if (!answer.card) {
          if (card && card.dataset.taskId === String(answer.id)) card.remove();
          return;
        }
        var fresh = fromHtml(answer.card);
        if (fresh && card && card.parentNode && fresh.dataset.taskId === card.dataset.taskId) {
          card.parentNode.replaceChild(fresh, card);
          watch(fresh);
        } else {
          addCard(answer.card); // a new run (vary): at the top
        }
      }).catch(function () {
        say(labels.action_failed);
      }).then(function () {
        target.removeAttribute("aria-busy");
      });
    });

    list.querySelectorAll("[data-ws-card]").forEach(watch);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
