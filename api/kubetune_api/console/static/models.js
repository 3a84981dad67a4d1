// Fine-tuned models: base model, size, eval loss before and after (from the job that made
// each one), and the promotion aliases pointing at them when the API serves aliases.

import { api } from "./api.js";
import { age, clear, el, number } from "./dom.js";

const ALIASES_ROUTE = "/api/finetune/aliases";

/** [{alias, model}] from an aliases answer of any of the usual shapes; [] otherwise. */
export function aliasRows(data) {
  let items = data;
  if (data && !Array.isArray(data) && typeof data === "object") {
    items = Array.isArray(data.aliases) ? data.aliases : Array.isArray(data.data) ? data.data : null;
    if (items === null) {
      items = Object.entries(data.aliases || {}).map(([alias, v]) => ({ alias, ...(typeof v === "object" ? v : { model: v }) }));
    }
  }
  if (!Array.isArray(items)) return [];
  return items
    .map((item) => ({
      alias: String(item.alias ?? item.name ?? ""),
      model: String(item.model_name ?? item.model ?? item.target ?? item.job_id ?? ""),
      path: item.path || item.model_path || item.uri || "",
    }))
    .filter((row) => row.alias);
}

async function loadAliases() {
  try {
    return aliasRows(await api(ALIASES_ROUTE));
  } catch {
    return []; // no aliases route (yet): show nothing
  }
}

function lossPair(metrics) {
  if (!metrics) return "–";
  const before = metrics.eval_loss_before;
  const after = metrics.eval_loss_after;
  if (before === undefined && after === undefined) return "–";
  return `${number(before)} → ${number(after)}`;
}

export function render(main) {
  const body = el("tbody", { id: "models-body" });
  const note = el("p", { class: "muted", id: "models-note" }, "Loading…");
  const aliasSection = el("section", { class: "card", id: "aliases", hidden: true });
  clear(
    main,
    el("div", { class: "page-head" }, el("h1", {}, "Fine-tuned models")),
    el(
      "table",
      { class: "models", id: "models-table" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["Model", "Base model", "Size", "Created", "Eval loss before → after", "Train loss", "Aliases", "Job"].map((h) =>
            el("th", {}, h),
          ),
        ),
      ),
      body,
    ),
    note,
    aliasSection,
  );
  let stopped = false;

  async function load() {
    try {
      const [models, jobs, aliases] = await Promise.all([
        api("/api/finetune/models"),
        api("/api/finetune/jobs?status=completed&limit=500"),
        loadAliases(),
      ]);
      if (stopped) return;
      const byPath = new Map(jobs.jobs.filter((j) => j.model_path).map((j) => [j.model_path, j]));
      clear(
        body,
        models.models.map((m) => {
          const job = byPath.get(m.path);
          const names = aliases.filter((a) => a.model === m.name || a.path === m.path).map((a) => a.alias);
          return el(
            "tr",
            { "data-model": m.name },
            el("td", { class: "mono" }, m.name, m.latest ? el("span", { class: "badge latest" }, "latest") : null),
            el("td", {}, m.base_model),
            el("td", {}, `${m.size_mb} MB`),
            el("td", { title: m.created || "" }, age(m.created)),
            el("td", {}, lossPair(job && job.metrics)),
            el("td", {}, number(job && job.metrics ? job.metrics.train_loss : undefined)),
            el("td", {}, names.join(", ") || "–"),
            el("td", {}, job ? el("a", { href: `/ui/jobs/${encodeURIComponent(job.job_id)}` }, job.job_id) : "–"),
          );
        }),
      );
      note.textContent = models.total ? `${models.total} model${models.total === 1 ? "" : "s"}` : "No fine-tuned model yet.";
      note.className = "muted";
      aliasSection.hidden = aliases.length === 0;
      clear(
        aliasSection,
        el("h2", {}, "Aliases"),
        el("ul", {}, aliases.map((a) => el("li", {}, el("strong", {}, a.alias), " → ", a.model || a.path || "–"))),
      );
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
