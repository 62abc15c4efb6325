/* Rankforge rating page: keyboard shortcuts, click and drag-and-drop ranking. No dependencies.
 *
 * Hooks (tests and templates rely on them):
 *   form#judgment-form[data-mode="pairwise"|"rank"][data-allow-ties][data-has-attributes][data-option-ids]
 *   .option[data-option-id][data-label], ol#rank-order, input#ranking-input (JSON tie groups, best first),
 *   input#flag-all-bad, #judgment-message, #choice-summary, form#skip-form + select#skip-reason,
 *   details#guidelines, dialog#keys-help, [data-action] buttons.
 *   Seen gate: p#seen-note, form.is-unseen: verdict keys, verdict buttons and submit do nothing until every .option
 *   has been on screen (watchSeen); details#earlier-turns (templates/_conversation.html) opens and closes with H.
 *   Rewrites: #edit-panel[data-full-url] (+ option id: the option's whole text), textarea#edit-text,
 *   input#edit-parent-input, #edit-diff, #active-ms-input; [data-action="open-edit"|"new-answer"|"discard-edit"].
 * Every htmx swap brings a new #judgment-form; state is rebuilt for it (listeners sit on document).
 *
 * Active time (#active-ms-input): time the page was visible, counted between the rater's interactions (keys,
 * pointer, scroll, typing); a gap between two interactions longer than data-idle-ms counts nothing, and time
 * while the page is hidden never counts.
 */
(function () {
  "use strict";

  let task = null; // the task on screen, see readTask()
  let dragId = null; // option id being dragged in the order list

  function readTask(form) {
    const optionIds = JSON.parse(form.dataset.optionIds || "[]").map(Number);
    const labels = {};
    form.querySelectorAll(".option").forEach((el) => {
      labels[el.dataset.optionId] = el.dataset.label;
    });
    return {
      form,
      mode: form.dataset.mode === "pairwise" && optionIds.length === 2 ? "pairwise" : "rank",
      allowTies: form.dataset.allowTies === "true",
      hasAttributes: form.dataset.hasAttributes === "true",
      optionIds,
      labels,
      startedAt: performance.now(),
      idleMs: Number(form.dataset.idleMs) || 120000,
      activeMs: 0,
      lastActive: performance.now(),
      editing: false, // the rewrite box is open
      editPending: false, // E pressed before a best response was chosen: the next choice opens the box
      editParent: null, // option id rewritten, null: a new answer
      editOriginal: "",
      groups: [], // tie groups of option ids, best first
      placed: [], // option ids in the order they were placed, for undo
      tieNext: false, // rank: the next placed option joins the last group
      allBad: false,
      submitting: false,
      seen: new Set(), // option ids that have been on screen: verdicts wait for all of them
      observer: null,
    };
  }

  // ---- verdicts wait until every response has been on screen -----------------------------------
  // A response counts as seen once half of it (or, for a long one, 30% of the window's height) has been visible
  // above the sticky decision bar. Checked once at once (what the page shows as it opens), then by an observer.

  function barInset() {
    const bar = task.form.querySelector(".decision");
    if (!bar || task.mode !== "pairwise" || getComputedStyle(bar).position !== "sticky") return 0;
    return Math.ceil(bar.getBoundingClientRect().height);
  }

  function shownEnough(visibleHeight, height) {
    return visibleHeight > 0 && visibleHeight >= Math.min(height * 0.5, window.innerHeight * 0.3);
  }

  function markSeen(id) {
    if (task.seen.has(id)) return;
    task.seen.add(id);
    if (allSeen()) {
      if (task.observer) task.observer.disconnect();
      renderSeen();
    }
  }

  const allSeen = () => task.optionIds.every((id) => task.seen.has(id));

  function renderSeen() {
    const note = document.getElementById("seen-note");
    const waiting = !allSeen();
    task.form.classList.toggle("is-unseen", waiting);
    if (note) note.hidden = !waiting;
    if (!waiting && note && note.dataset.warned) say("");
  }

  function watchSeen() {
    const inset = barInset();
    const options = Array.from(task.form.querySelectorAll(".option"));
    options.forEach((el) => {
      const box = el.getBoundingClientRect();
      const visible = Math.min(box.bottom, window.innerHeight - inset) - Math.max(box.top, 0);
      if (shownEnough(visible, box.height)) markSeen(Number(el.dataset.optionId));
    });
    renderSeen();
    if (allSeen() || !("IntersectionObserver" in window)) {
      if (!("IntersectionObserver" in window)) options.forEach((el) => markSeen(Number(el.dataset.optionId)));
      return;
    }
    const thresholds = Array.from({ length: 21 }, (_, i) => i / 20);
    task.observer = new IntersectionObserver(
      (entries) => {
        entries.forEach((entry) => {
          if (shownEnough(entry.intersectionRect.height, entry.boundingClientRect.height)) {
            markSeen(Number(entry.target.dataset.optionId));
          }
        });
      },
      { rootMargin: `0px 0px -${inset}px 0px`, threshold: thresholds },
    );
    options.forEach((el) => task.observer.observe(el));
  }

  function waitForSeen() {
    const note = document.getElementById("seen-note");
    if (note) note.dataset.warned = "1";
    const missing = task.optionIds.filter((id) => !task.seen.has(id)).map(label);
    say(`Not yet: read ${missing.join(" and ")} first (scroll until it is on screen); verdict keys wait until you have seen every response.`, "error");
  }

  function toggleEarlierTurns() {
    const earlier = document.getElementById("earlier-turns");
    if (!earlier) return;
    earlier.open = !earlier.open;
    if (earlier.open) earlier.querySelector("summary").focus();
  }

  function init() {
    const form = document.getElementById("judgment-form");
    localizeTimes();
    if (!form) {
      task = null;
      return;
    }
    if (task && task.form === form) return;
    const replacing = task !== null;
    if (task && task.observer) task.observer.disconnect();
    task = readTask(form);
    render();
    watchExpiry(form);
    if (replacing) {
      // A new task after a submit: start reading at its top, not where the last one ended.
      const area = document.getElementById("task-area");
      if (area && area.getBoundingClientRect().top < 0) area.scrollIntoView({ block: "start" });
    }
    fitConversation();
    watchSeen();
  }

  // A conversation: when the answers would end under the sticky bar, the page starts at the conversation (the
  // header, guidelines and progress above it stay one scroll away) so the last user turn, both answers and the
  // decision bar are on one screen; the earlier turns are one collapsed line (templates/_conversation.html).
  function fitConversation() {
    const section = document.querySelector(".prompt-conversation");
    if (!section || !task.form.classList.contains("is-conversation")) return;
    const bar = task.form.querySelector(".decision");
    const bottom = Math.max(...Array.from(task.form.querySelectorAll(".option"), (el) => el.getBoundingClientRect().bottom));
    const limit = bar ? bar.getBoundingClientRect().top : window.innerHeight;
    if (bottom > limit) section.scrollIntoView({ block: "start" });
  }

  // ---- state changes -------------------------------------------------------------------------

  const label = (id) => task.labels[id] || String(id);
  const isPlaced = (id) => task.groups.some((group) => group.includes(id));
  const unranked = () => task.optionIds.filter((id) => !isPlaced(id));

  function resetRanking() {
    task.groups = [];
    task.placed = [];
    task.tieNext = false;
    task.allBad = false;
  }

  function place(id) {
    if (task.allBad) resetRanking();
    if (isPlaced(id)) {
      say(`${label(id)} is already in your order. Backspace undoes the last placement.`);
      return;
    }
    if (task.tieNext && task.groups.length) task.groups[task.groups.length - 1].push(id);
    else task.groups.push([id]);
    task.placed.push(id);
    task.tieNext = false;
    say("");
    render();
    if (task.editPending && bestOption() !== null) startEdit(bestOption());
  }

  function unplace(id) {
    task.groups = task.groups.map((group) => group.filter((x) => x !== id)).filter((group) => group.length);
    task.placed = task.placed.filter((x) => x !== id);
    task.allBad = false;
    render();
  }

  function undo() {
    if (task.mode === "pairwise") resetRanking(); // a pairwise verdict is one decision
    else if (task.tieNext) task.tieNext = false;
    else if (task.allBad) resetRanking();
    else if (task.placed.length) unplace(task.placed[task.placed.length - 1]);
    say("");
    render();
  }

  function toggleTieNext() {
    if (!task.allowTies) return say("Ties are not allowed in this project.");
    if (!task.groups.length || task.allBad) return say("Place a response first, then press = to tie the next one with it.");
    task.tieNext = !task.tieNext;
    say("");
    render();
  }

  function prefer(id) {
    const other = task.optionIds.find((x) => x !== id);
    task.groups = [[id], [other]];
    task.placed = [id, other];
    task.allBad = false;
    decided();
  }

  function tie() {
    if (!task.allowTies) return say("Ties are not allowed in this project.");
    task.groups = [task.optionIds.slice()];
    task.placed = task.optionIds.slice();
    task.allBad = false;
    decided();
  }

  function allBad() {
    if (task.allBad && task.mode === "rank") return undo(); // X again takes it back
    task.groups = [task.optionIds.slice()];
    task.placed = task.optionIds.slice();
    task.tieNext = false;
    task.allBad = true;
    decided();
  }

  // Pairwise verdicts submit at once unless there are attribute scales to fill in first.
  function decided() {
    say("");
    render();
    if (task.editPending && bestOption() !== null) return startEdit(bestOption());
    if (task.editing && task.editParent !== null && bestOption() !== task.editParent) {
      return say(`Your rewrite is of ${label(task.editParent)}, which is no longer ranked best: rank it first or discard the rewrite.`, "error");
    }
    if (task.mode === "pairwise" && !task.hasAttributes && !task.editing) submit();
  }

  // Drag and drop: put `id` before or after the group at `index`, or into it (a tie).
  function move(id, index, where) {
    const target = task.groups[index];
    if (target && target.length === 1 && target[0] === id) return;
    if (where === "join" && !task.allowTies) where = "after";
    task.groups = task.groups.map((group) => (group === target ? group : group.filter((x) => x !== id)));
    if (target) {
      const position = target.indexOf(id);
      if (position >= 0 && where !== "join") target.splice(position, 1);
    }
    task.groups = task.groups.filter((group) => group.length || group === target);
    let at = target ? task.groups.indexOf(target) : task.groups.length;
    if (!target) task.groups.push([id]);
    else if (where === "join") {
      if (!target.includes(id)) target.push(id);
    } else task.groups.splice(where === "before" ? at : at + 1, 0, [id]);
    task.groups = task.groups.filter((group) => group.length);
    if (!task.placed.includes(id)) task.placed.push(id);
    task.allBad = false;
    task.tieNext = false;
    say("");
    render();
  }

  // ---- active time -------------------------------------------------------------------------

  function touch() {
    if (!task) return;
    const now = performance.now();
    if (!document.hidden) {
      const gap = now - task.lastActive;
      if (gap > 0 && gap <= task.idleMs) task.activeMs += gap;
    }
    task.lastActive = now;
  }

  let lastMove = 0;
  function onPointerMove() {
    const now = performance.now();
    if (now - lastMove < 1000) return; // a moving pointer counts once a second
    lastMove = now;
    touch();
  }

  function onVisibility() {
    if (!task) return;
    if (document.hidden) touch(); // counts up to the moment the page was hidden
    else task.lastActive = performance.now(); // the hidden stretch never counts
  }

  // ---- rewrites (edits) ----------------------------------------------------------------------

  function editElements() {
    return {
      panel: document.getElementById("edit-panel"),
      text: document.getElementById("edit-text"),
      parent: document.getElementById("edit-parent-input"),
      of: document.getElementById("edit-of"),
      diff: document.getElementById("edit-diff"),
    };
  }

  function bestOption() {
    if (task.allBad || !task.groups.length) return null;
    return task.groups[0][0];
  }

  function openEdit() {
    const { panel } = editElements();
    if (!panel) return;
    const best = bestOption();
    if (best === null) {
      task.editPending = true;
      return say(task.mode === "pairwise"
        ? "Which response do you rewrite? Press 1 or 2: it becomes the better one, and the box opens."
        : "Place the best response first (its number): the box then opens with its text.");
    }
    startEdit(best);
  }

  async function startEdit(parentId) {
    const el = editElements();
    if (!el.panel) return;
    task.editPending = false;
    task.editing = true;
    task.editParent = parentId;
    el.panel.hidden = false;
    el.text.disabled = false;
    el.parent.disabled = false;
    el.parent.value = parentId === null ? "" : String(parentId);
    el.of.textContent = parentId === null ? "(a new answer)" : `of response ${label(parentId)}`;
    showSubmitButton();
    let original = "";
    if (parentId !== null) {
      el.text.value = "Loading the response…";
      el.text.readOnly = true;
      try {
        const response = await fetch(el.panel.dataset.fullUrl + parentId, { credentials: "same-origin" });
        if (!response.ok) throw new Error(String(response.status));
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        const pre = doc.querySelector("pre");
        original = pre ? pre.textContent : "";
      } catch (error) {
        el.text.readOnly = false;
        el.text.value = "";
        return say("Could not load the response's text; reload the page to try again.", "error");
      }
      el.text.readOnly = false;
    }
    if (!task.editing || task.editParent !== parentId) return; // discarded or switched meanwhile
    task.editOriginal = original;
    el.text.value = original;
    renderDiff();
    el.text.focus();
    el.text.setSelectionRange(0, 0);
    el.text.scrollTop = 0;
    say(parentId === null ? "Write your answer; Ctrl+Enter submits." : "Rewrite the response; the changes show below. Ctrl+Enter submits.");
  }

  function newAnswer() {
    if (!editElements().panel) return;
    startEdit(null);
  }

  function discardEdit() {
    const el = editElements();
    task.editing = false;
    task.editPending = false;
    task.editParent = null;
    if (!el.panel) return;
    el.panel.hidden = true;
    el.text.value = "";
    el.text.disabled = true;
    el.parent.disabled = true;
    el.parent.value = "";
    el.diff.replaceChildren();
    showSubmitButton();
    say("");
  }

  function showSubmitButton() {
    const button = task.form.querySelector(".submit-button");
    if (!button) return;
    if (!("initiallyHidden" in button.dataset)) button.dataset.initiallyHidden = String(button.hidden);
    button.hidden = button.dataset.initiallyHidden === "true" && !task.editing;
  }

  // Line diff (longest common subsequence) of the original and the rewrite, as text nodes only.
  function lineDiff(before, after) {
    const a = before.split("\n");
    const b = after.split("\n");
    if (a.length * b.length > 4000000) return null;
    const n = a.length;
    const m = b.length;
    const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
      }
    }
    const out = [];
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && a[i] === b[j]) {
        out.push([" ", a[i]]);
        i++;
        j++;
      } else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) out.push(["+", b[j++]]);
      else out.push(["-", a[i++]]);
    }
    return out;
  }

  let diffTimer = null;
  function renderDiff() {
    const el = editElements();
    if (!el.diff || !task.editing) return;
    const lines = lineDiff(task.editOriginal, el.text.value);
    el.diff.replaceChildren();
    if (lines === null) {
      el.diff.textContent = "Too long to show the changes line by line.";
      return;
    }
    const changed = lines.filter(([mark]) => mark !== " ").length;
    const summary = document.createElement("p");
    summary.className = "muted edit-diff-summary";
    summary.textContent = changed ? `${lines.filter(([m]) => m === "+").length} lines added, ${lines.filter(([m]) => m === "-").length} removed` : "No changes yet.";
    const pre = document.createElement("pre");
    pre.className = "edit-diff-lines";
    lines.forEach(([mark, text], k) => {
      // unchanged lines far from any change are left out
      if (mark === " " && !lines.slice(Math.max(0, k - 2), k + 3).some(([x]) => x !== " ")) return;
      const line = document.createElement(mark === "+" ? "ins" : mark === "-" ? "del" : "span");
      line.className = "diff-line";
      line.textContent = `${mark} ${text}\n`;
      pre.append(line);
    });
    el.diff.append(summary, pre);
  }

  function onInput(event) {
    touch();
    if (!task || event.target.id !== "edit-text") return;
    clearTimeout(diffTimer);
    diffTimer = setTimeout(renderDiff, 150);
  }

  // ---- submitting ----------------------------------------------------------------------------

  function submit() {
    if (!task || task.submitting) return;
    task.form.requestSubmit();
  }

  // Completes and checks the ranking; returns an error message or "" when the form may go.
  function prepare() {
    if (!allSeen()) {
      const missing = task.optionIds.filter((id) => !task.seen.has(id)).map(label);
      return `Not yet: read ${missing.join(" and ")} first; a judgment waits until you have seen every response.`;
    }
    if (task.mode === "rank" && !task.allBad) {
      const left = unranked();
      if (left.length === 1) {
        const last = task.groups[task.groups.length - 1];
        if (task.tieNext && last) last.push(left[0]);
        else task.groups.push([left[0]]);
        task.placed.push(left[0]);
        task.tieNext = false;
      }
    }
    render();
    const left = unranked();
    if (task.mode === "pairwise" && !task.groups.length) {
      return task.allowTies
        ? "Choose first: 1 = A is better, 2 = B is better, T = tie, X = both bad."
        : "Choose first: 1 = A is better, 2 = B is better, X = both bad.";
    }
    if (left.length) {
      return `Your order is incomplete: place ${left.map(label).join(", ")} first (keys 1–${Math.min(9, task.optionIds.length)} or click).`;
    }
    if (task.editing) {
      const el = editElements();
      const text = el.text.value;
      if (task.editParent !== null && bestOption() !== task.editParent) {
        return `Your rewrite is of ${label(task.editParent)}, which is not ranked best: rank it first or discard the rewrite.`;
      }
      if (!text.trim()) return "The rewrite is empty: write it, or discard it to submit without one.";
      if (task.editParent !== null && text.trim() === task.editOriginal.trim()) {
        return "The rewrite is the same as the response: change it, or discard it to submit without one.";
      }
    }
    touch();
    document.getElementById("time-spent-input").value = String(Math.round(performance.now() - task.startedAt));
    const active = document.getElementById("active-ms-input");
    if (active) active.value = String(Math.round(task.activeMs));
    return "";
  }

  function onSubmit(event) {
    if (!task || event.target !== task.form) return;
    const problem = task.submitting ? "Already sending…" : prepare();
    if (problem) {
      // Capture phase on document: stopping here keeps htmx (listening on the form) from sending.
      event.preventDefault();
      event.stopImmediatePropagation();
      if (!task.submitting) say(problem, "error");
      return;
    }
    task.submitting = true;
    task.form.classList.add("is-submitting");
    say("Saving…", "info");
  }

  function onRequestDone(event) {
    if (!task || event.detail.elt !== task.form || !document.contains(task.form)) return;
    if (event.detail.successful) return; // the next task replaces this one
    task.submitting = false;
    task.form.classList.remove("is-submitting");
    const xhr = event.detail.xhr;
    const status = xhr && xhr.status;
    if (!status) say("Could not reach the server. Check your connection and press Enter to try again.", "error");
    else if (status === 401 || status === 403) say("Your session has expired or the page is stale: reload the page (your choice is kept only on this page).", "error");
    else say(`The server could not save this judgment (error ${status}). Press Enter to try again.`, "error");
  }

  // ---- rendering -----------------------------------------------------------------------------

  function say(text, kind) {
    const box = document.getElementById("judgment-message");
    if (!box) return;
    box.textContent = text;
    box.dataset.kind = text ? kind || "info" : "";
  }

  function ordinal(n) {
    const suffix = n % 100 >= 11 && n % 100 <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
    return n + suffix;
  }

  function render() {
    const { form, groups } = task;
    document.getElementById("ranking-input").value = groups.length ? JSON.stringify(groups) : "";
    const allBadBox = document.getElementById("flag-all-bad");
    if (allBadBox) allBadBox.checked = task.allBad;

    const positions = {}; // option id -> 1-based group position
    groups.forEach((group, index) => group.forEach((id) => (positions[id] = index + 1)));
    form.querySelectorAll(".option").forEach((el) => {
      const id = Number(el.dataset.optionId);
      const position = positions[id];
      const tied = position && groups[position - 1].length > 1;
      el.classList.toggle("is-ranked", Boolean(position));
      el.classList.toggle("is-best", task.mode === "pairwise" && !tied && position === 1);
      el.classList.toggle("is-worse", task.mode === "pairwise" && !tied && position === 2);
      el.classList.toggle("is-tied", Boolean(tied) && !task.allBad);
      el.classList.toggle("is-bad", task.allBad);
      const badge = el.querySelector(".rank-badge");
      if (badge) {
        badge.hidden = !position;
        if (task.allBad) badge.textContent = "bad";
        else if (task.mode === "pairwise") badge.textContent = tied ? "tie" : position === 1 ? "better" : "worse";
        else badge.textContent = position ? (tied ? "= " : "") + ordinal(position) : "";
      }
      const choose = el.querySelector('.choose-button[data-action="append"], .choose-button[data-action="unplace"]');
      if (choose) {
        choose.dataset.action = position ? "unplace" : "append";
        choose.querySelector(".choose-text").textContent = position ? "Take out" : "Rank next";
        // The number key places an option; once placed it does nothing, so its hint goes away.
        const key = choose.querySelector(".choose-key");
        if (key) key.hidden = Boolean(position);
      }
    });

    form.querySelectorAll('[data-action="prefer"]').forEach((button) => {
      const id = Number(button.dataset.optionId);
      button.setAttribute("aria-pressed", String(!task.allBad && groups.length === 2 && groups[0][0] === id));
    });
    form.querySelectorAll('[data-action="tie"]').forEach((button) => {
      button.setAttribute("aria-pressed", String(!task.allBad && groups.length === 1));
    });
    form.querySelectorAll('[data-action="all-bad"]').forEach((b) => b.setAttribute("aria-pressed", String(task.allBad)));
    form.querySelectorAll('[data-action="tie-next"]').forEach((b) => b.setAttribute("aria-pressed", String(task.tieNext)));

    renderOrder();
    renderSummary();
  }

  function chip(id, removable) {
    const el = document.createElement("span");
    el.className = "rank-chip";
    el.draggable = true;
    el.dataset.optionId = String(id);
    el.textContent = label(id);
    if (removable) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "chip-remove";
      remove.dataset.action = "unplace";
      remove.dataset.optionId = String(id);
      remove.setAttribute("aria-label", `Take ${label(id)} out of your order`);
      remove.textContent = "×";
      el.append(remove);
    }
    return el;
  }

  function renderOrder() {
    const list = document.getElementById("rank-order");
    if (!list) return;
    list.replaceChildren();
    list.classList.toggle("is-empty", !task.groups.length);
    task.groups.forEach((group, index) => {
      const item = document.createElement("li");
      item.className = "rank-group";
      item.dataset.groupIndex = String(index);
      const position = document.createElement("span");
      position.className = "rank-position";
      position.textContent = String(index + 1);
      const members = document.createElement("span");
      members.className = "rank-members";
      group.forEach((id, k) => {
        if (k) members.append(tieMark());
        members.append(chip(id, true));
      });
      if (task.tieNext && index === task.groups.length - 1) {
        members.append(tieMark());
        const pending = document.createElement("span");
        pending.className = "rank-chip is-pending";
        pending.textContent = "next";
        members.append(pending);
      }
      item.append(position, members);
      list.append(item);
    });
    const pool = document.getElementById("rank-unranked");
    if (pool) {
      pool.replaceChildren(...unranked().map((id) => chip(id, false)));
      if (!pool.children.length) pool.textContent = "none";
    }
  }

  function tieMark() {
    const mark = document.createElement("span");
    mark.className = "tie-mark";
    mark.textContent = "=";
    mark.setAttribute("aria-label", "tied with");
    return mark;
  }

  function renderSummary() {
    const box = document.getElementById("choice-summary");
    if (!box) return;
    const { groups } = task;
    let text;
    if (task.allBad) text = task.mode === "pairwise" ? "Both bad" : "All bad";
    else if (!groups.length) {
      text = task.mode === "pairwise" ? "No choice yet" : "Nothing ranked yet: press the numbers, best first";
    } else if (task.mode === "pairwise") text = groups.length === 1 ? "Tie" : `${label(groups[0][0])} is better`;
    else {
      text = groups.map((group) => group.map(label).join(" = ")).join("  >  ");
      const left = unranked().length;
      if (task.tieNext) text += "  = …";
      if (left) text += `   (${left} left)`;
    }
    box.textContent = text;
    box.classList.toggle("is-empty", !groups.length);
  }

  // ---- page helpers --------------------------------------------------------------------------

  function localizeTimes() {
    document.querySelectorAll("time.js-local-time:not([data-localized])").forEach((el) => {
      const when = parseTime(el.getAttribute("datetime"));
      el.dataset.localized = "true";
      if (!isNaN(when)) el.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    });
  }

  // Timestamps without an offset are UTC (that is what the server stores).
  function parseTime(text) {
    if (!text) return new Date(NaN);
    return new Date(/(Z|[+-]\d\d:?\d\d)$/i.test(text) ? text : text + "Z");
  }

  function watchExpiry(form) {
    const stamp = document.querySelector("time.js-local-time");
    if (!stamp) return;
    const wait = parseTime(stamp.getAttribute("datetime")) - Date.now();
    if (isNaN(wait) || wait > 2 ** 31 - 1) return;
    setTimeout(() => {
      if (task && task.form === form && !task.submitting) {
        say("Your reservation of this task has expired, so saving may be refused. Submit anyway, or reload for a fresh task.", "error");
      }
    }, Math.max(0, wait));
  }

  function toggleGuidelines(open) {
    const panel = document.getElementById("guidelines");
    if (!panel) return;
    panel.open = open === undefined ? !panel.open : open;
    if (panel.open) panel.scrollIntoView({ block: "nearest" });
  }

  function toggleKeys() {
    const dialog = document.getElementById("keys-help");
    if (!dialog) return;
    if (dialog.open) dialog.close();
    else dialog.showModal();
  }

  function openSkip() {
    const panel = document.getElementById("skip-panel");
    const select = document.getElementById("skip-reason");
    if (!panel || !select) return;
    panel.hidden = false;
    select.focus();
  }

  function closeSkip() {
    const panel = document.getElementById("skip-panel");
    if (panel) panel.hidden = true;
    document.activeElement && document.activeElement.blur();
  }

  // ---- input ---------------------------------------------------------------------------------

  const TEXT_INPUTS = ["checkbox", "radio", "button", "submit", "reset", "hidden", "range", "color", "file"];

  function isTyping(el) {
    if (!el || el === document.body) return false;
    if (el.isContentEditable) return true;
    const tag = el.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && !TEXT_INPUTS.includes(el.type));
  }

  function onKeyDown(event) {
    if (event.defaultPrevented || event.isComposing) return;
    const target = event.target;
    // "?" is Shift+/ on US keyboards; some synthetic events report the unshifted key.
    const key = event.key === "/" && event.shiftKey ? "?" : event.key;
    const dialog = document.getElementById("keys-help");
    if (dialog && dialog.open) {
      if (key === "?") {
        event.preventDefault();
        dialog.close();
      }
      return; // Esc closes the dialog natively
    }

    if (target && target.id === "skip-reason") {
      if (key === "Enter") {
        event.preventDefault();
        document.getElementById("skip-form").requestSubmit();
      } else if (key === "Escape") {
        event.preventDefault();
        closeSkip();
      }
      return;
    }

    const inForm = task && task.form.contains(target);
    if (key === "Enter" && (event.ctrlKey || event.metaKey) && task && (inForm || !isTyping(target))) {
      event.preventDefault();
      return submit();
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (isTyping(target)) {
      if (key === "Escape") target.blur();
      return;
    }

    if (key === "?") return handled(event, toggleKeys);
    const letter = key.length === 1 ? key.toLowerCase() : key;
    if (letter === "g") return handled(event, () => toggleGuidelines());
    if (letter === "h" && document.getElementById("earlier-turns")) return handled(event, toggleEarlierTurns);
    if (!task) return;

    if (key === "Enter") {
      // Enter keeps its own meaning on links and summaries, and on buttons outside the form.
      if (target.closest && (target.closest("a, summary") || (!inForm && target.closest("button")))) return;
      return handled(event, submit);
    }
    if (task.submitting) return;
    if (letter === "s") return handled(event, openSkip);
    if (letter === "e" && editElements().panel) return handled(event, openEdit);
    if (letter === "n" && document.querySelector('[data-action="new-answer"]')) return handled(event, newAnswer);
    const number = /^[1-9]$/.test(key) ? Number(key) : 0;
    const verdictKey = letter === "x" || number || (task.mode === "pairwise" ? letter === "t" : key === "=");
    if (verdictKey && !allSeen()) return handled(event, waitForSeen);
    if (letter === "x") return handled(event, allBad);
    if (key === "Backspace") return handled(event, undo);
    if (key === "Escape") {
      closeSkip();
      return say("");
    }

    if (task.mode === "pairwise") {
      if (number === 1 || number === 2) return handled(event, () => prefer(task.optionIds[number - 1]));
      if (letter === "t") return handled(event, tie);
    } else {
      if (number && number <= task.optionIds.length) return handled(event, () => place(task.optionIds[number - 1]));
      if (key === "=") return handled(event, toggleTieNext);
    }
  }

  function handled(event, action) {
    event.preventDefault();
    action();
  }

  function onClick(event) {
    const dialog = document.getElementById("keys-help");
    if (dialog && event.target === dialog) return dialog.close(); // a click on the backdrop

    const button = event.target.closest("[data-action]");
    if (button) {
      const id = Number(button.dataset.optionId);
      const actions = {
        "toggle-keys": toggleKeys,
        "toggle-guidelines": () => toggleGuidelines(),
        "open-guidelines": () => toggleGuidelines(true),
        "open-skip": openSkip,
        "close-skip": closeSkip,
      };
      const taskActions = {
        prefer: () => prefer(id),
        tie: tie,
        "all-bad": allBad,
        append: () => place(id),
        unplace: () => unplace(id),
        undo: undo,
        clear: () => {
          resetRanking();
          render();
        },
        "tie-next": toggleTieNext,
        "open-edit": openEdit,
        "new-answer": newAnswer,
        "discard-edit": discardEdit,
      };
      const action = button.dataset.action;
      if (actions[action]) return actions[action]();
      const verdictAction = ["prefer", "tie", "all-bad", "append", "tie-next"].includes(action);
      if (task && verdictAction && task.form.contains(button) && !allSeen()) return waitForSeen();
      if (task && taskActions[action] && task.form.contains(button) && !task.submitting) return taskActions[action]();
      return;
    }

    // Rank mode: a click on a response (not on its controls, not while selecting text) puts it next.
    if (!task || task.mode !== "rank" || task.submitting) return;
    const chipEl = event.target.closest("#rank-unranked .rank-chip");
    if (chipEl) return place(Number(chipEl.dataset.optionId));
    const option = event.target.closest(".option");
    if (!option || !task.form.contains(option)) return;
    if (event.target.closest("a, button, input, label, select, textarea, summary, .attribute-scales, pre")) return;
    const selection = window.getSelection();
    if (selection && String(selection).trim()) return;
    const id = Number(option.dataset.optionId);
    if (!allSeen()) return waitForSeen();
    if (!isPlaced(id)) place(id);
  }

  // ---- drag and drop (rank mode order list) --------------------------------------------------

  function dropZone(item, event) {
    const box = item.getBoundingClientRect();
    const y = (event.clientY - box.top) / box.height;
    if (task.allowTies && y > 0.3 && y < 0.7) return "join";
    return y < 0.5 ? "before" : "after";
  }

  function clearDropMarks() {
    document.querySelectorAll(".drop-before, .drop-after, .drop-join, .drop-end").forEach((el) => {
      el.classList.remove("drop-before", "drop-after", "drop-join", "drop-end");
    });
  }

  function onDragStart(event) {
    const chipEl = event.target.closest && event.target.closest(".rank-chip[data-option-id]");
    if (!chipEl || !task) return;
    dragId = Number(chipEl.dataset.optionId);
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", String(dragId));
    chipEl.classList.add("is-dragging");
  }

  function onDragOver(event) {
    if (dragId === null || !task) return;
    const list = document.getElementById("rank-order");
    const pool = document.getElementById("rank-unranked");
    const inList = list && list.contains(event.target);
    const inPool = pool && pool.contains(event.target);
    if (!inList && !inPool) return;
    event.preventDefault(); // allows the drop
    event.dataTransfer.dropEffect = "move";
    clearDropMarks();
    const item = event.target.closest(".rank-group");
    if (item) item.classList.add("drop-" + dropZone(item, event));
    else (inPool ? pool : list).classList.add("drop-end");
  }

  function onDrop(event) {
    if (dragId === null || !task) return;
    const list = document.getElementById("rank-order");
    const pool = document.getElementById("rank-unranked");
    const id = dragId;
    clearDropMarks();
    if (pool && pool.contains(event.target)) {
      event.preventDefault();
      return unplace(id);
    }
    if (!list || !list.contains(event.target)) return;
    event.preventDefault();
    const item = event.target.closest(".rank-group");
    if (item) move(id, Number(item.dataset.groupIndex), dropZone(item, event));
    else move(id, -1, "after");
  }

  function onDragEnd() {
    dragId = null;
    clearDropMarks();
    document.querySelectorAll(".is-dragging").forEach((el) => el.classList.remove("is-dragging"));
  }

  // ---- wiring --------------------------------------------------------------------------------

  document.addEventListener("keydown", touch, true);
  document.addEventListener("pointerdown", touch, true);
  document.addEventListener("pointermove", onPointerMove, { passive: true });
  document.addEventListener("wheel", touch, { passive: true });
  document.addEventListener("scroll", touch, { passive: true, capture: true });
  document.addEventListener("input", onInput);
  document.addEventListener("visibilitychange", onVisibility);
  document.addEventListener("keydown", onKeyDown);
  document.addEventListener("click", onClick);
  document.addEventListener("submit", onSubmit, true);
  document.addEventListener("dragstart", onDragStart);
  document.addEventListener("dragover", onDragOver);
  document.addEventListener("drop", onDrop);
  document.addEventListener("dragend", onDragEnd);
  document.addEventListener("htmx:load", init);
  document.addEventListener("htmx:afterSwap", init);
  document.addEventListener("htmx:afterRequest", onRequestDone);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
