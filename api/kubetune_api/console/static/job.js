// A job's page: status, progress and ETA, why it waits or failed, the live loss curve,
// events, the log, and cancel. The id comes from the path (`/ui/jobs/{job_id}`).

import { ApiError, api } from "./api.js";
import { createChart, drawChart } from "./chart.js";
import {
  ENDED,
  age,
  clear,
  duration,
  el,
  number,
  progressBar,
  reasonWords,
  statusBadge,
} from "./dom.js";
import { logPanel } from "./joblog.js";

const STATUS_MS = 3000;
const METRICS_MS = 3000;
const EVENTS_MS = 6000;

function fact(label, value, id) {
  return el("div", { class: "fact" }, el("dt", {}, label), el("dd", { id }, value));
}

export function render(main, [jobId]) {
  const id = encodeURIComponent(jobId);
  const badge = el("span", { id: "job-status" });
  const cancelButton = el("button", { type: "button", id: "cancel", class: "danger" }, "Cancel job");
  const confirmBox = el(
    "span",
    { id: "cancel-confirm", hidden: true },
    "Stop this job? ",
    el("button", { type: "button", id: "cancel-yes", class: "danger" }, "Yes, cancel it"),
    el("button", { type: "button", id: "cancel-no" }, "No"),
  );
  const cancelNote = el("span", { id: "cancel-note", class: "muted" });
  const facts = el("dl", { class: "facts", id: "facts" });
  const reason = el("p", { id: "reason", class: "message", hidden: true });
  const chart = createChart();
  const chartEmpty = el("p", { id: "chart-empty", class: "muted" }, "no metrics yet");
  const chartNote = el("p", { id: "chart-note", class: "muted" });
  const eventsBody = el("tbody", { id: "events-body" });
  const log = logPanel(jobId);

  clear(
    main,
    el(
      "div",
      { class: "page-head" },
      el("h1", {}, el("span", { class: "mono", id: "job-id" }, jobId), " ", badge),
      el("div", { class: "actions" }, cancelButton, confirmBox, cancelNote),
    ),
    reason,
    el("section", { class: "card" }, facts),
    el("section", { class: "card" }, el("h2", {}, "Loss"), chart, chartEmpty, chartNote),
    el(
      "section",
      { class: "card" },
      el("h2", {}, "Events"),
      el(
        "table",
        { class: "events" },
        el("thead", {}, el("tr", {}, ["When", "Type", "Reason", "Object", "Message"].map((h) => el("th", {}, h)))),
        eventsBody,
      ),
    ),
    log.node,
  );

  const timers = new Set();
  let stopped = false;
  let ended = false;
  let lastStatus = null;
  let metricsFinal = false; // one last read of metrics and events once the job ended
  let eventsFinal = false;

  function later(fn, ms) {
    if (stopped) return;
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  }

  function showStatus(st) {
    lastStatus = st;
    ended = ENDED.has(st.status);
    clear(badge, statusBadge(st.status));
    const eta = st.status === "running" ? duration(st.eta_seconds) : "–";
    const steps = st.total_steps ? `${st.step ?? 0} / ${st.total_steps}` : st.step ?? "–";
    clear(
      facts,
      fact("Progress", progressBar(st.progress, "job progress"), "fact-progress"),
      fact("ETA", eta, "fact-eta"),
      fact("Step", String(steps), "fact-step"),
      fact("Epoch", number(st.epoch, 3), "fact-epoch"),
      fact("Loss", number(st.loss), "fact-loss"),
      fact("Model", st.model || "–", "fact-model"),
      fact("Stage", st.stage || st.phase || "–", "fact-stage"),
      fact("Created", age(st.created), "fact-created"),
      st.world_size ? fact("Processes", String(st.world_size), "fact-world") : null,
      st.model_path ? fact("Stored at", st.model_path, "fact-path") : null,
    );
    const words = reasonWords(st);
    reason.hidden = !words && !(st.message && st.status !== "running");
    reason.textContent = words || st.message || "";
    reason.className = st.failure_reason ? "message error" : "message";
    const cancellable = !ended && !st.cancel_requested;
    cancelButton.hidden = !cancellable || !confirmBox.hidden;
    if (st.cancel_requested && !ended) cancelNote.textContent = "cancellation requested…";
    else if (!cancellable) cancelNote.textContent = "";
  }

  async function pollStatus() {
    try {
      showStatus(await api(`/api/finetune/status/${id}`));
      log.update(ended, lastStatus.status === "running");
    } catch (err) {
      if (stopped || err.status === 401) return;
      if (err.status === 404) {
        clear(main, el("p", { class: "message error", id: "not-found" }, `Job ${jobId} not found.`));
        stop();
        return;
      }
      reason.hidden = false;
      reason.className = "message error";
      reason.textContent = `Could not read the status: ${err.message}`;
    }
    if (!stopped && !ended) later(pollStatus, STATUS_MS);
  }

  let drawnBefore = 0;

  function showMetrics(data) {
    const points = (data.train || []).length + (data.eval || []).length;
    if (points === 0 && drawnBefore > 0) {
      // the answer lost what was drawn (the trainer's pods are gone): keep the curve
      chartNote.textContent = "The trainer's metrics are no longer served; the curve drawn so far is kept.";
      return;
    }
    const drawn = drawChart(chart, data);
    drawnBefore = drawn;
    chartEmpty.hidden = drawn > 0;
    const total = data.total_steps ? ` of ${data.total_steps} steps` : "";
    chartNote.textContent =
      drawn > 0
        ? `${data.train.length} train points, ${data.eval.length} eval points${total}` +
          (data.downsampled ? " (long run: downsampled, the curve's shape kept)" : "")
        : "";
  }

  async function pollMetrics() {
    try {
      const data = await api(`/api/finetune/metrics/${id}`);
      if (stopped) return;
      showMetrics(data);
    } catch (err) {
      if (stopped || err.status === 401) return;
      // a failed read (the API restarting) keeps the curve drawn so far
      chartNote.textContent = `Could not read the metrics: ${err.message}`;
    }
    if (!ended || !metricsFinal) {
      metricsFinal = ended;
      later(pollMetrics, METRICS_MS);
    }
  }

  async function pollEvents() {
    try {
      const data = await api(`/api/finetune/events/${id}`);
      if (stopped) return;
      clear(
        eventsBody,
        data.events.map((ev) =>
          el(
            "tr",
            { class: ev.type === "Warning" ? "warning" : "" },
            el("td", { title: ev.time || "" }, age(ev.time)),
            el("td", {}, ev.type),
            el("td", {}, ev.reason),
            el("td", { class: "mono" }, ev.object),
            el("td", {}, ev.count > 1 ? `${ev.message} (×${ev.count})` : ev.message),
          ),
        ),
      );
    } catch (err) {
      if (stopped || err.status === 401) return;
    }
    if (!stopped && (!ended || !eventsFinal)) {
      eventsFinal = ended;
      later(pollEvents, EVENTS_MS);
    }
  }

  cancelButton.addEventListener("click", () => {
    cancelButton.hidden = true;
    confirmBox.hidden = false;
  });
  confirmBox.querySelector("#cancel-no").addEventListener("click", () => {
    confirmBox.hidden = true;
    cancelButton.hidden = false;
  });
  confirmBox.querySelector("#cancel-yes").addEventListener("click", async () => {
    confirmBox.hidden = true;
    cancelNote.textContent = "asking the operator to stop the job…";
    try {
      const answer = await api(`/api/finetune/cancel/${id}`, { method: "POST" });
      cancelNote.textContent = answer.message;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      cancelNote.textContent = `Cancel failed: ${err.message}`;
      cancelButton.hidden = lastStatus ? ENDED.has(lastStatus.status) : false;
    }
  });

  function stop() {
    stopped = true;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    log.stop();
  }

  pollStatus();
  pollMetrics();
  pollEvents();
  return { stop };
}
