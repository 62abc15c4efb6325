/* Rankforge step-labelling page (templates/steps/label.html): keyboard only works. No dependencies.
 *
 * Hooks: form#labels-form[data-steps][data-tags][data-done], li.step[data-step] (.is-current, .after-error),
 * inputs name="label-<i>" (good|bad|neutral), name="tag-<i>", name="first_error" (a step index or ""),
 * #steps-submit, #steps-progress, #time-spent-input, details#rewrite-<i>.
 * Keys: j/k next/previous step; 1/2/3 label good/bad/neutral; e first error here (the step is bad; later steps are
 * "after error" and need no label); 4..9 toggle the project's first six failure tags; r rewrite the step (a branch);
 * Enter submit; Escape leaves a text box. A submit happens once: the button is disabled and a second Enter ignored.
 */
(function () {
  "use strict";
  const form = document.getElementById("labels-form");
  if (!form) return;
  const steps = Array.from(document.querySelectorAll("li.step"));
  const tags = JSON.parse(form.dataset.tags || "[]");
  const done = form.dataset.done === "true";
  const started = performance.now();
  let current = 0;
  let submitted = false;

  function radios(name) {
    return Array.from(document.querySelectorAll('input[form="labels-form"][name="' + name + '"]'));
  }
  function labelOf(i) {
    const checked = radios("label-" + i).find((r) => r.checked);
    return checked ? checked.value : "";
  }
  function firstError() {
    const checked = radios("first_error").find((r) => r.checked);
    return checked && checked.value !== "" ? Number(checked.value) : null;
  }
  function effectiveFirstError() {
    const marked = firstError();
    if (marked !== null) return marked;
    const bad = steps.findIndex((_, i) => labelOf(i) === "bad");
    return bad >= 0 ? bad : null;
  }
  function refresh() {
    const end = effectiveFirstError();
    let missing = 0;
    steps.forEach((el, i) => {
      const after = end !== null && i > end;
      el.classList.toggle("after-error", after);
      el.classList.toggle("is-current", i === current);
      el.classList.toggle("is-first-error", end === i);
      const label = labelOf(i);
      el.dataset.label = label;
      const state = el.querySelector(".step-state");
      if (state) state.textContent = after ? "after the first error: no label needed" : (label || "not labelled");
      if (!after && !label) missing += 1;
    });
    const progress = document.getElementById("steps-progress");
    if (progress) progress.textContent = missing ? missing + " step" + (missing === 1 ? "" : "s") + " still to label" : "ready to submit";
    return missing;
  }
  function move(to) {
    current = Math.max(0, Math.min(steps.length - 1, to));
    refresh();
    steps[current].focus({ preventScroll: true });
    steps[current].scrollIntoView({ block: "nearest" });
  }
  function setLabel(label) {
    const radio = radios("label-" + current).find((r) => r.value === label);
    if (!radio) return;
    radio.checked = true;
    if (label !== "bad" && firstError() === current) radios("first_error").find((r) => r.value === "").checked = true;
    refresh();
  }
  function markFirstError() {
    const mark = radios("first_error").find((r) => r.value === String(current));
    if (!mark) return;
    if (mark.checked) {
      radios("first_error").find((r) => r.value === "").checked = true;
    } else {
      mark.checked = true;
      radios("label-" + current).find((r) => r.value === "bad").checked = true;
    }
    refresh();
  }
  function toggleTag(n) {
    const tag = tags[n];
    if (tag === undefined) return;
    const box = Array.from(document.querySelectorAll('input[name="tag-' + current + '"]')).find((b) => b.value === tag);
    if (box) box.checked = !box.checked;
  }
  function rewrite() {
    const box = document.getElementById("rewrite-" + current);
    if (!box) return;
    box.open = true;
    const area = box.querySelector("textarea");
    if (area) area.focus();
  }
  function submit() {
    if (submitted) return;
    if (refresh() > 0) {
      const progress = document.getElementById("steps-progress");
      if (progress) progress.classList.add("is-warning");
      const first = steps.findIndex((el, i) => !el.classList.contains("after-error") && !labelOf(i));
      if (first >= 0) move(first);
      return;
    }
    submitted = true;
    document.getElementById("time-spent-input").value = String(Math.round(performance.now() - started));
    const button = document.getElementById("steps-submit");
    if (button) button.disabled = true;
    form.submit();
  }

  form.addEventListener("submit", (event) => {
    // a click on the button: the same single submit
    event.preventDefault();
    submit();
  });
  document.addEventListener("change", (event) => {
    if (event.target.form === form || event.target.getAttribute("form") === "labels-form") refresh();
  });
  steps.forEach((el, i) => el.addEventListener("click", () => { if (current !== i) { current = i; refresh(); } }));

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const typing = target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type === "text"));
    if (typing) {
      if (event.key === "Escape") target.blur();
      return;
    }
    if (done) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const actions = {
      j: () => move(current + 1), k: () => move(current - 1),
      1: () => setLabel("good"), 2: () => setLabel("bad"), 3: () => setLabel("neutral"),
      e: markFirstError, r: rewrite, Enter: submit,
    };
    if (/^[4-9]$/.test(key)) actions[key] = () => toggleTag(Number(key) - 4);
    if (key === "Enter" && target.closest && target.closest("a, summary, .rewrite-form")) return;
    if (!actions[key]) return;
    event.preventDefault();
    actions[key]();
  });
  refresh();
  if (!done && steps.length) move(0);
})();
