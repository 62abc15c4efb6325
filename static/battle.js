/* Rankforge battle page: streams a turn's two answers (server-sent events read from a POST with fetch, so the
 * request carries the CSRF header and is never repeated by itself), and the voting keys of the rating page.
 *
 * Hooks (templates/battles/_battle.html): #battle-stream[data-stream-url][data-refresh-url][data-state],
 *   .battle-answer[data-side][data-turn] (text pieces are appended as text nodes: model text is never markup),
 *   .battle-error[data-side][data-turn], button[data-verdict="a"|"b"|"tie"|"bad"], textarea.battle-prompt.
 * #battle-stream's data-state goes waiting -> streaming -> ended; each piece bumps the answer's data-pieces.
 * Keys: 1 = A is better, 2 = B is better, T = tie, X = both bad (the rating page's), Ctrl+Enter sends a prompt.
 */
(function () {
  "use strict";

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
    } catch (error) {
      return "";
    }
  }

  function pane(kind, side, turn) {
    return document.querySelector(`.${kind}[data-side="${side}"][data-turn="${turn}"]`);
  }

  function showError(side, turn, message) {
    const box = pane("battle-error", side, turn);
    if (!box) return;
    box.textContent = message;
    box.hidden = false;
  }

  function handle(block, turn) {
    let event = "message";
    const data = [];
    block.split("\n").forEach((line) => {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    });
    let payload = {};
    try {
      payload = data.length ? JSON.parse(data.join("\n")) : {};
    } catch (error) {
      return;
    }
    if (event === "delta") {
      const answer = pane("battle-answer", payload.side, turn);
      if (!answer) return;
      answer.append(document.createTextNode(String(payload.text)));
      answer.dataset.pieces = String(Number(answer.dataset.pieces || 0) + 1);
    } else if (event === "error") {
      showError(payload.side, turn, String(payload.message));
    } else if (event === "busy") {
      const waiting = document.querySelector(".battle-waiting");
      if (waiting) waiting.textContent = "This turn is being answered in another tab or window.";
    }
  }

  async function stream(el) {
    if (el.dataset.state !== "waiting") return;
    el.dataset.state = "streaming";
    const turn = el.dataset.turn;
    try {
      const response = await fetch(el.dataset.streamUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrfToken(), Accept: "text/event-stream" },
      });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          handle(buffer.slice(0, cut), turn);
          buffer = buffer.slice(cut + 2);
        }
      }
    } catch (error) {
      showError("a", turn, "The answers could not be received; reload the page.");
    }
    el.dataset.state = "ended";
    if (window.htmx && document.body.contains(el)) {
      window.htmx.ajax("GET", el.dataset.refreshUrl, { target: "#battle-area", swap: "innerHTML" });
    }
  }

  function init() {
    const el = document.getElementById("battle-stream");
    if (el) stream(el);
  }

  function isTyping(el) {
    if (!el || el === document.body) return false;
    const tag = el.tagName;
    return el.isContentEditable || tag === "TEXTAREA" || tag === "SELECT" || tag === "INPUT";
  }

  const VERDICT_KEYS = { 1: "a", 2: "b", t: "tie", x: "bad" };

  function onKeyDown(event) {
    const target = event.target;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target && target.matches && target.matches("textarea.battle-prompt")) {
      event.preventDefault();
      if (target.value.trim()) target.form.requestSubmit();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing || isTyping(target)) return;
    const dialog = document.getElementById("keys-help");
    if (dialog && dialog.open) return;
    const verdict = VERDICT_KEYS[event.key.length === 1 ? event.key.toLowerCase() : event.key];
    if (!verdict) return;
    const button = document.querySelector(`#battle-vote button[data-verdict="${verdict}"]`);
    if (!button || button.disabled) return;
    event.preventDefault();
    button.click();
  }

  document.addEventListener("keydown", onKeyDown);
  document.addEventListener("htmx:afterSwap", init);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
