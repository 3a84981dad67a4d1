// Fine-tuned models: base model, size, the held-out figures before and after (from each
// model's registry record: they outlive the job that made it), the promotion aliases
// (`GET /api/finetune/aliases`) naming each one, and the aliases with their last decision.

import { api } from "./api.js";
import { age, clear, el, number } from "./dom.js";

/** "before → after" of one figure of a model's metrics ("–" when neither is known). */
export function pair(metrics, before, after) {
  if (!metrics || (metrics[before] == null && metrics[after] == null)) return "–";
  return `${number(metrics[before])} → ${number(metrics[after])}`;
}

/** The last decision in words: "promoted b (if-better): reason", "kept a (...)". */
export function decisionWords(decision) {
  if (!decision) return "–";
  const verb = decision.promoted ? "promoted" : "not promoted";
  const why = decision.reason ? `: ${decision.reason}` : "";
  return `${verb} ${decision.model} (${decision.policy})${why}`;
}

function jobCell(model, jobIds) {
  if (!model.job_id) return "–";
  if (!jobIds.has(model.job_id)) return el("span", { class: "muted", title: "job deleted" }, `${model.job_id} (deleted)`);
  return el("a", { href: `/ui/jobs/${encodeURIComponent(model.job_id)}` }, model.job_id);
}

function modelRow(m, aliases, jobIds) {
  const names = aliases.filter((a) => a.model === m.name).map((a) => a.alias);
  return el(
    "tr",
    { "data-model": m.name },
    el("td", { class: "mono" }, m.name, m.latest ? el("span", { class: "badge latest" }, "latest") : null),
    el("td", {}, m.base_model),
    el("td", {}, `${m.size_mb} MB`),
    el("td", { title: m.created || "" }, age(m.created)),
    el("td", { class: "eval-loss" }, pair(m.metrics, "eval_loss_before", "eval_loss_after")),
    el("td", { class: "bpb" }, pair(m.metrics, "bits_per_byte_before", "bits_per_byte_after")),
    el("td", { class: "aliases" }, names.join(", ") || "–"),
    el("td", { class: "job" }, jobCell(m, jobIds)),
  );
}

function aliasRow(a) {
  return el(
    "tr",
    { "data-alias": a.alias },
    el("td", {}, el("strong", {}, a.alias)),
    el("td", { class: "mono" }, a.model || "–"),
    el("td", { class: "mono" }, a.path || "–"),
    el("td", {}, a.version == null ? "–" : String(a.version)),
    el("td", { class: "decision" }, decisionWords(a.last_decision)),
    el("td", { class: "pending" }, a.pending ? `${a.pending.action} to ${a.pending.model}` : "–"),
  );
}

function table(id, headings, body) {
  return el("table", { id }, el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))), body);
}

export function render(main) {
  const body = el("tbody", { id: "models-body" });
  const note = el("p", { class: "muted", id: "models-note" }, "Loading…");
  const aliasBody = el("tbody", { id: "aliases-body" });
  const aliasNote = el("p", { class: "muted", id: "aliases-note" });
  clear(
    main,
    el("div", { class: "page-head" }, el("h1", {}, "Fine-tuned models")),
    table(
      "models-table",
      ["Model", "Base model", "Size", "Created", "Eval loss before → after", "Bits per byte before → after", "Aliases", "Job"],
      body,
    ),
    note,
    el(
      "section",
      { class: "card", id: "aliases" },
      el("h2", {}, "Aliases"),
      table("aliases-table", ["Alias", "Model", "Path", "Version", "Last decision", "Pending"], aliasBody),
      aliasNote,
    ),
  );
  let stopped = false;

  async function load() {
    try {
      const [models, jobs, aliases] = await Promise.all([
        api("/api/finetune/models"),
        api("/api/finetune/jobs?limit=500"),
        api("/api/finetune/aliases"),
      ]);
      if (stopped) return;
      const jobIds = new Set(jobs.jobs.map((j) => j.job_id));
      clear(body, models.models.map((m) => modelRow(m, aliases.aliases, jobIds)));
      note.textContent = models.total ? `${models.total} model${models.total === 1 ? "" : "s"}` : "No fine-tuned model yet.";
      note.className = "muted";
      clear(aliasBody, aliases.aliases.map(aliasRow));
      aliasNote.textContent = aliases.total ? "" : "No alias yet: promote a model to give it one.";
    } catch (err) {
      if (stopped || err.status === 401) return;
      note.textContent = `Could not list the models: ${err.message}`;
      note.className = "message error";
    }
  }

  load();
  return {
    stop() {
      stopped = true;
    },
  };
}
