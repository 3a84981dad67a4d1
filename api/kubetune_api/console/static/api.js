// Requests to the kubetune API (this origin only), with the API key of this tab.
//
// The key is kept in sessionStorage (this tab, until it is closed), sent as
// `Authorization: Bearer <key>` as the API expects, never put in a URL and never logged.

const KEY_STORAGE = "kubetune.apiKey";

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

let refusedHandler = () => {};

/** Called whenever the API answers 401 (no key, or a key it refuses), with the key the
 * refused request carried ("" for none). */
export function onRefused(handler) {
  refusedHandler = handler;
}

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const key = getKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

/** The API's `detail` in words: a string, or pydantic's error list joined. */
export function detailText(body) {
  if (body == null) return "";
  if (typeof body === "string") return body;
  const detail = body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((e) => e.msg || String(e)).join("; ");
  return "";
}

async function send(path, options) {
  const sent = getKey();
  const resp = await fetch(path, { credentials: "omit", cache: "no-store", ...options });
  if (resp.status === 401) {
    refusedHandler(sent);
    throw new ApiError(401, null, "refused: the API did not accept the API key");
  }
  return resp;
}

/** A JSON request; resolves to the parsed body, rejects with an ApiError when not 2xx. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const extra = body === undefined ? {} : { "Content-Type": "application/json" };
  const resp = await send(path, {
    method,
    headers: headers(extra),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, data, detailText(data) || `HTTP ${resp.status}`);
  }
  return data;
}

/** The raw response of a text route (the trainer log), for reading or streaming. */
export async function openText(path, { signal } = {}) {
  const resp = await send(path, { headers: headers({ Accept: "text/plain" }), signal });
  if (!resp.ok) {
    let data = null;
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
    throw new ApiError(resp.status, data, detailText(data) || `HTTP ${resp.status}`);
  }
  return resp;
}
