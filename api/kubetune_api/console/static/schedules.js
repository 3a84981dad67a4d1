// Retraining schedules (`GET /api/finetune/schedules`): cron and time zone, suspended or
// not, the last run (a link to its job page) with its result, and the next run.

import { api } from "./api.js";
import { clear, duration, el } from "./dom.js";

const POLL_MS = 10000;

/** "in 5 min" / "5 min ago" for an RFC 3339 time ("–" for none). */
function when(iso) {
  const then = iso ? Date.parse(iso) : NaN;
  if (Number.isNaN(then)) return "–";
  const seconds = (then - Date.now()) / 1000;
  return seconds > 0 ? `in ${duration(seconds)}` : `${duration(-seconds)} ago`;
}

function lastRun(s) {
  if (!s.last_run) return "–";
  return el(
    "span",
    {},
    el("a", { href: `/ui/jobs/${encodeURIComponent(s.last_run)}` }, s.last_run),
    s.last_result ? ` (${s.last_result})` : "",
  );
}

function row(s) {
  const state = s.suspend ? "suspended" : s.ready === false ? s.reason || "not ready" : "active";
  return el(
    "tr",
    { "data-schedule": s.name },
    el("td", { class: "mono" }, s.name),
    el("td", { class: "mono cron" }, s.schedule, el("span", { class: "muted" }, ` ${s.time_zone}`)),
    el("td", { class: "state" }, el("span", { class: `badge schedule-${s.suspend ? "suspended" : "active"}` }, state)),
    el("td", {}, s.model),
    el("td", { class: "last-run", title: s.last_run_time || "" }, lastRun(s)),
    el("td", { class: "next-run", title: s.next_run || "" }, s.suspend ? "–" : when(s.next_run)),
  );
}

export function render(main) {
  const body = el("tbody", { id: "schedules-body" });
  const note = el("p", { class: "muted", id: "schedules-note" }, "Loading…");
  clear(
    main,
    el("div", { class: "page-head" }, el("h1", {}, "Retraining schedules")),
    el(
      "table",
      { id: "schedules-table" },
      el("thead", {}, el("tr", {}, ["Schedule", "Cron", "State", "Model", "Last run", "Next run"].map((h) => el("th", {}, h)))),
      body,
    ),
    note,
  );
  let stopped = false;
  let timer = null;

  async function load() {
    try {
      const data = await api("/api/finetune/schedules");
      if (stopped) return;
      clear(body, data.schedules.map(row));
      note.textContent = data.total ? `${data.total} schedule${data.total === 1 ? "" : "s"}` : "No schedule yet.";
      note.className = "muted";
    } catch (err) {
      if (stopped || err.status === 401) return;
      note.textContent = `Could not list the schedules: ${err.message}`;
      note.className = "message error";
    }
    if (!stopped) timer = setTimeout(load, POLL_MS);
  }

  load();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
