// The trainer's log on a job page: read once (last lines) or followed as it is written.

import { openText } from "./api.js";
import { el } from "./dom.js";

const TAIL_LINES = 500;
const KEEP_CHARS = 400_000; // what the page keeps of a long followed log
const RETRY_MS = 3000;

/** A log panel; `panel.node` goes in the page, `panel.update(ended, started)` after each status. */
export function logPanel(jobId) {
  const pre = el("pre", { class: "log", id: "log", tabindex: "0" });
  const note = el("p", { class: "muted", id: "log-note" }, "");
  const follow = el("input", { type: "checkbox", id: "log-follow", checked: true });
  const refresh = el("button", { type: "button", id: "log-refresh" }, "Reload");
  const node = el(
    "section",
    { class: "card" },
    el(
      "div",
      { class: "card-head" },
      el("h2", {}, "Log"),
      el("label", { class: "inline" }, follow, " follow"),
      refresh,
    ),
    pre,
    note,
  );
  const id = encodeURIComponent(jobId);
  let controller = null;
  let retry = null;
  let streaming = false;
  let ended = false;
  let stopped = false;

  function append(text) {
    const nearBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
    let all = pre.textContent + text;
    if (all.length > KEEP_CHARS) all = all.slice(all.length - KEEP_CHARS);
    pre.textContent = all;
    if (follow.checked && nearBottom) pre.scrollTop = pre.scrollHeight;
  }

  function abort() {
    clearTimeout(retry);
    retry = null;
    if (controller) controller.abort();
    controller = null;
    streaming = false;
  }

  async function load() {
    abort();
    if (stopped) return;
    const mine = new AbortController();
    controller = mine;
    const live = follow.checked && !ended;
    const query = live ? "follow=true" : `tail_lines=${TAIL_LINES}`;
    try {
      const resp = await openText(`/api/finetune/logs/${id}?${query}`, { signal: mine.signal });
      pre.textContent = "";
      note.textContent = live ? "following…" : "";
      if (!live) {
        append(await resp.text());
        return;
      }
      streaming = true;
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        append(decoder.decode(value, { stream: true }));
      }
      streaming = false;
      note.textContent = "end of log";
    } catch (err) {
      streaming = false;
      if (stopped || mine.signal.aborted || err.status === 401) return;
      note.textContent =
        err.status === 409 ? "No trainer pod yet: the log appears once it starts." : `Log: ${err.message}`;
      if (!ended) retry = setTimeout(load, RETRY_MS);
    }
  }

  follow.addEventListener("change", load);
  refresh.addEventListener("click", load);

  return {
    node,
    /**
     * Called after each status read: nothing to read until a trainer has started (no pod
     * yet answers 409); then start the log once and follow it while the job runs.
     */
    update(jobEnded, jobStarted) {
      ended = jobEnded;
      if (!jobStarted && !ended) {
        if (!streaming && !retry) note.textContent = "The log appears once the trainer starts.";
        return;
      }
      const first = controller === null && !retry;
      if (first || (follow.checked && !ended && !streaming && !retry)) load();
    },
    stop() {
      stopped = true;
      abort();
    },
  };
}
