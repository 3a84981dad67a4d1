// The start form: the original API's parameters (from `GET /api/finetune/info`), sent to
// `POST /api/finetune/start`. The browser does not check the values (novalidate): the API
// does, and each 422 error is shown next to the field it names.

import { api } from "./api.js";
import { clear, el } from "./dom.js";

const ORIGINAL = ["model", "dataset_url", "epochs", "batch_size", "learning_rate"];
const EXTRA = {
  model_name: { type: "string", description: "Name of the stored model (optional)." },
};
const LABELS = {
  model: "Model",
  dataset_url: "Dataset URL or path",
  epochs: "Epochs",
  batch_size: "Batch size",
  learning_rate: "Learning rate",
  model_name: "Output model name",
};

function hint(info) {
  const parts = [];
  if (info.minimum !== null && info.minimum !== undefined) parts.push(`min ${info.minimum}`);
  if (info.maximum !== null && info.maximum !== undefined) parts.push(`max ${info.maximum}`);
  if (info.default !== null && info.default !== undefined) parts.push(`default ${info.default}`);
  return parts.join(", ");
}

function input(name, info, models) {
  const attrs = { id: `field-${name}`, name, "aria-describedby": `error-${name}` };
  if (name === "model") {
    return el("select", attrs, models.map((m) => el("option", { value: m }, m)));
  }
  if (info.type === "integer" || info.type === "number") {
    return el("input", { ...attrs, type: "text", inputmode: "decimal", placeholder: info.default ?? "" });
  }
  return el("input", { ...attrs, type: "text", placeholder: name === "dataset_url" ? "data/frigo_training.csv" : "" });
}

/** The request body: empty fields left out (the API's defaults apply), numbers as numbers. */
export function bodyOf(form, params) {
  const body = {};
  for (const [name, info] of Object.entries(params)) {
    const raw = form.elements[name].value.trim();
    if (raw === "") continue;
    if (info.type === "integer" || info.type === "number") {
      const value = Number(raw);
      body[name] = Number.isFinite(value) ? value : raw; // not a number: the API says so
    } else body[name] = raw;
  }
  return body;
}

/** The request field a 422 error names (`loc` is ["body", field, ...]). */
export function fieldOf(error) {
  const loc = Array.isArray(error.loc) ? error.loc : [];
  return String(loc[0] === "body" ? loc[1] ?? "" : loc[loc.length - 1] ?? "");
}

export function render(main) {
  const general = el("p", { id: "form-error", class: "message error", role: "alert", hidden: true });
  const form = el("form", { id: "start-form", novalidate: true, method: "post", action: "/ui/start" });
  clear(main, el("div", { class: "page-head" }, el("h1", {}, "Start a fine-tuning job")), general, form);
  let stopped = false;

  function showErrors(errors, params) {
    for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    const unplaced = [];
    for (const error of errors) {
      const name = fieldOf(error);
      const slot = name in params ? form.querySelector(`#error-${name}`) : null;
      if (slot) {
        slot.textContent = slot.textContent ? `${slot.textContent}; ${error.msg}` : error.msg;
        form.elements[name].setAttribute("aria-invalid", "true");
      } else unplaced.push(name ? `${name}: ${error.msg}` : error.msg);
    }
    general.hidden = unplaced.length === 0;
    general.textContent = unplaced.join("; ");
  }

  async function build() {
    let info;
    try {
      info = await api("/api/finetune/info");
    } catch (err) {
      if (stopped || err.status === 401) return;
      general.hidden = false;
      general.textContent = `Could not read the API's parameters: ${err.message}`;
      return;
    }
    if (stopped) return;
    const params = {};
    for (const name of ORIGINAL) params[name] = info.parameters[name] || { type: "string" };
    Object.assign(params, EXTRA);
    clear(
      form,
      Object.entries(params).map(([name, p]) =>
        el(
          "div",
          { class: "field", "data-field": name },
          el("label", { for: `field-${name}` }, LABELS[name] || name),
          input(name, p, info.supported_models),
          el("small", { class: "muted" }, p.description || "", hint(p) ? ` (${hint(p)})` : ""),
          el("p", { class: "field-error", id: `error-${name}`, role: "alert" }),
        ),
      ),
      el("div", { class: "field" }, el("button", { type: "submit", id: "start-submit" }, "Start")),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("#start-submit");
      button.disabled = true;
      try {
        const answer = await api("/api/finetune/start", { method: "POST", body: bodyOf(form, params) });
        window.location.assign(`/ui/jobs/${encodeURIComponent(answer.job_id)}`);
      } catch (err) {
        if (err.status === 401) return;
        const detail = err.body && err.body.detail;
        showErrors(Array.isArray(detail) ? detail : [{ loc: [], msg: err.message }], params);
      } finally {
        button.disabled = false;
      }
    });
  }

  build();
  return {
    stop() {
      stopped = true;
    },
  };
}
