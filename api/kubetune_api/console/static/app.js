// The console's entry point: picks the page from the path, and asks for the API key when
// the API answers 401 (kept in this tab's sessionStorage; see api.js).

import { forgetKey, getKey, onRefused, setKey } from "./api.js";
import { clear, el } from "./dom.js";

const PAGES = [
  [/^\/ui\/?$/, "jobs", () => import("./jobs.js")],
  [/^\/ui\/models$/, "models", () => import("./models.js")],
  [/^\/ui\/start$/, "start", () => import("./start.js")],
  [/^\/ui\/schedules$/, "schedules", () => import("./schedules.js")],
  [/^\/ui\/jobs\/([^/]+)$/, "job", () => import("./job.js")],
];

const main = document.getElementById("main");
const keyPanel = document.getElementById("key-panel");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyMessage = document.getElementById("key-message");
const keyLabel = document.getElementById("key-label");
const keyForget = document.getElementById("key-forget");

let current = null; // the running page: {stop()}

function showKeyState() {
  const has = Boolean(getKey());
  keyLabel.textContent = has ? "API key set for this tab" : "";
  keyForget.hidden = !has;
}

function stopPage() {
  if (current && typeof current.stop === "function") current.stop();
  current = null;
}

async function startPage() {
  stopPage();
  const path = window.location.pathname;
  for (const [pattern, name, load] of PAGES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("active", link.dataset.nav === name);
    }
    const page = await load();
    current = page.render(main, match.slice(1).map(decodeURIComponent)) || null;
    return;
  }
  clear(main, el("p", { class: "message error" }, "No such console page."));
}

onRefused((sentKey) => {
  const stored = getKey();
  if (stored && stored !== sentKey) return; // an answer to a key replaced since
  const hadKey = Boolean(sentKey);
  forgetKey(); // a refused key is not kept
  showKeyState();
  stopPage();
  keyPanel.hidden = false;
  keyMessage.textContent = hadKey
    ? "refused: the API did not accept this API key. Enter another one."
    : "This API needs an API key.";
  keyMessage.className = hadKey ? "message error refused" : "message";
  clear(
    main,
    el("p", { class: "message error", id: "refused" }, hadKey ? "refused" : "API key needed"),
  );
  keyInput.focus();
});

keyForm.addEventListener("submit", (event) => {
  event.preventDefault(); // never sent: the key stays in this tab
  const key = keyInput.value.trim();
  keyInput.value = "";
  if (!key) {
    keyMessage.textContent = "Enter the API key.";
    return;
  }
  setKey(key);
  keyPanel.hidden = true;
  keyMessage.textContent = "";
  showKeyState();
  startPage();
});

keyForget.addEventListener("click", () => {
  forgetKey();
  showKeyState();
  startPage();
});

showKeyState();
startPage();
