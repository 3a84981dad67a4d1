// Small DOM and wording helpers shared by the pages (text only: no HTML from data).

/** `el("a", {href: "/ui", class: "x"}, "text", child)`: an element with attributes and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

/** "42 s", "3 min", "2 h 5 min", "3 d". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  return `${Math.floor(h / 24)} d`;
}

/** Time since an ISO time ("5 min ago"). The original API's times have no zone: UTC. */
export function age(iso, now = Date.now()) {
  if (!iso) return "–";
  const withZone = /[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`;
  const then = Date.parse(withZone);
  if (Number.isNaN(then)) return "–";
  return `${duration((now - then) / 1000)} ago`;
}

export function percent(fraction) {
  return `${Math.round((fraction || 0) * 100)}%`;
}

export function number(value, digits = 4) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return Number(value.toPrecision(digits)).toString();
}

const PENDING_WORDS = {
  Creating: "The trainer's Job is being created.",
  Unschedulable: "No node can run the trainer yet (not enough free GPUs, CPU or memory).",
  Queued: "Waiting in the queue for its turn.",
  ImagePull: "The trainer image cannot be pulled.",
  ContainerCreating: "The trainer container is starting.",
  WaitingForRetry: "The last attempt failed; waiting before the next one.",
};

const FAILURE_WORDS = {
  BadInput: "The request or the dataset is not usable (retrying will not help).",
  OutOfMemory: "The trainer ran out of memory (try a smaller batch size).",
  ImagePull: "The trainer image could not be pulled.",
  DeadlineExceeded: "The job ran past its deadline.",
  Cancelled: "The job was cancelled.",
  BackoffLimitExceeded: "Every retry failed.",
  Unknown: "The trainer failed for a reason it did not report.",
};

/** Why a job waits or failed, in words ("" when it does neither). */
export function reasonWords(status) {
  if (status.failure_reason) {
    const words = FAILURE_WORDS[status.failure_reason] || status.failure_reason;
    return status.failure_message ? `${words} ${status.failure_message}` : words;
  }
  if (status.pending_reason && (status.status === "pending" || status.status === "queued")) {
    const words = PENDING_WORDS[status.pending_reason] || status.pending_reason;
    return status.pending_message ? `${words} ${status.pending_message}` : words;
  }
  return "";
}

export const STATUSES = ["pending", "queued", "running", "completed", "failed", "cancelled"];
export const ENDED = new Set(["completed", "failed", "cancelled"]);

export function statusBadge(status) {
  return el("span", { class: `badge status-${status}`, "data-status": status }, status);
}

export function progressBar(fraction, label) {
  const value = Math.max(0, Math.min(1, fraction || 0));
  return el(
    "span",
    { class: "progress" },
    el("progress", { max: "1", value: String(value), "aria-label": label || "progress" }),
    el("span", { class: "progress-text" }, percent(value)),
  );
}

/** The ids accepted in `/ui/jobs/{id}` (the route checks the same; this keeps URLs tidy). */
export function isJobId(value) {
  return /^[a-z0-9_]([-a-z0-9_]{0,62})$/.test(value);
}
