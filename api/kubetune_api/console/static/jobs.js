// The job list: status, progress bar, model and age of the tenant's jobs; filter by status.

import { api } from "./api.js";
import { STATUSES, age, clear, duration, el, progressBar, statusBadge } from "./dom.js";

const POLL_MS = 4000;

export function render(main) {
  const params = new URLSearchParams(window.location.search);
  let status = STATUSES.includes(params.get("status")) ? params.get("status") : "";

  const filter = el(
    "select",
    { id: "status-filter", "aria-label": "status filter" },
    el("option", { value: "" }, "all statuses"),
    STATUSES.map((s) => el("option", { value: s, selected: s === status }, s)),
  );
  const body = el("tbody", { id: "jobs-body" });
  const note = el("p", { class: "muted", id: "jobs-note" }, "Loading…");
  clear(
    main,
    el(
      "div",
      { class: "page-head" },
      el("h1", {}, "Fine-tuning jobs"),
      el("label", { class: "filter" }, "Show ", filter),
      el("a", { class: "button", href: "/ui/start" }, "Start a job"),
    ),
    el(
      "table",
      { class: "jobs", id: "jobs-table" },
      el(
        "thead",
        {},
        el("tr", {}, ["Job", "Status", "Progress", "Model", "Age", "ETA"].map((h) => el("th", {}, h))),
      ),
      body,
    ),
    note,
  );

  let timer = null;
  let stopped = false;
  let generation = 0; // a filter change starts a new polling loop; older answers are dropped

  async function load() {
    const mine = ++generation;
    const query = new URLSearchParams({ limit: "200" });
    if (status) query.set("status", status);
    try {
      const data = await api(`/api/finetune/jobs?${query}`);
      if (stopped || mine !== generation) return;
      clear(
        body,
        data.jobs.map((job) =>
          el(
            "tr",
            { "data-job-id": job.job_id },
            el("td", {}, el("a", { href: `/ui/jobs/${encodeURIComponent(job.job_id)}` }, job.job_id)),
            el("td", {}, statusBadge(job.status)),
            el("td", {}, progressBar(job.progress, `progress of ${job.job_id}`)),
            el("td", {}, job.model || "–"),
            el("td", { title: job.created || "" }, age(job.created)),
            el("td", {}, job.status === "running" ? duration(job.eta_seconds) : "–"),
          ),
        ),
      );
      note.textContent = data.total
        ? `${data.total} job${data.total === 1 ? "" : "s"}${status ? ` ${status}` : ""}`
        : `No jobs${status ? ` ${status}` : ""} yet.`;
      note.className = "muted";
    } catch (err) {
      if (stopped || mine !== generation || err.status === 401) return;
      note.textContent = `Could not list the jobs: ${err.message}`;
      note.className = "message error";
    }
    if (!stopped && mine === generation) timer = setTimeout(load, POLL_MS);
  }

  filter.addEventListener("change", () => {
    status = filter.value;
    const url = status ? `/ui?status=${encodeURIComponent(status)}` : "/ui";
    window.history.replaceState(null, "", url);
    clearTimeout(timer);
    load();
  });

  load();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
