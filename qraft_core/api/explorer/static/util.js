// Small helpers shared by every page: element building, formatting, API calls.

const KEY_STORE = "qraft.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY_STORE, value);
  else sessionStorage.removeItem(KEY_STORE);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// One request at a time: the embedded store serves one session at a time anyway, and
// overlapping sessions on one store object are not safe.
let queue = Promise.resolve();

// GET or POST JSON; the key is sent when the user entered one (writes need it).
export function api(path, options = {}) {
  const run = queue.then(() => request(path, options));
  queue = run.catch(() => {});
  return run;
}

async function request(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (apiKey()) headers["X-API-Key"] = apiKey();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

// h("div.card#x", {onclick}, child, ...): an element with classes/id from the tag string.
export function h(tag, attrs = {}, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name);
  for (const part of rest) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(displayText(child)));
  }
}

// Bidi embeddings, overrides and isolates (U+202A-202E, U+2066-2069) in a name from the data would
// reverse the text after it (a card's numbers): shown as their escapes, as cards and the CLI show them.
const BIDI_CONTROLS = /[\u202a-\u202e\u2066-\u2069]/g;

export function displayText(value) {
  return String(value).replace(BIDI_CONTROLS, (char) => `\\u${char.charCodeAt(0).toString(16)}`);
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// `object[key]` when `key` is the object's own: names from the data such as "constructor" or
// "__proto__" must not reach the properties every object inherits.
export function own(object, key) {
  return Object.hasOwn(object, key) ? object[key] : undefined;
}

export const TYPE_LABEL = {
  concept_drift: "Concept drift",
  anomaly: "Anomaly",
  cluster_change: "Cluster change",
  freq_pattern: "Frequent pattern",
};

export const VERDICT_LABEL = { unreviewed: "unreviewed", confirmed: "confirmed", false_alarm: "false alarm" };

// "2026-01-05T00:25:00.000Z" -> "2026-01-05 00:25:00" (always UTC, the time of every event).
export function fmtTime(iso, withDate = true) {
  if (!iso) return "—";
  const text = iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "");
  return withDate ? text : text.slice(11);
}

export function fmtNum(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-3)) return value.toExponential(2);
  return Number(value.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

export function fmtInt(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

export function pill(kind, text) {
  return h(`span.pill.${kind}`, {}, text);
}

export function typePill(type) {
  return pill(`t-${type}`, own(TYPE_LABEL, type) || type);
}

export function verdictPill(verdict) {
  return pill(`v-${verdict}`, own(VERDICT_LABEL, verdict) || verdict);
}

export function errorBox(error) {
  return h("div.error", { role: "alert" }, error.message || String(error));
}

export function section(title, ...children) {
  return h("section.panel", {}, h("h2", {}, title), ...children);
}

// Hash routes: "#/finding/<id>?minutes=15" -> {path: ["finding", id], params}; a malformed
// escape (`%E0%A4%A`) throws a URIError.
export function currentRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { path: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

export function routeTo(path, params) {
  const query = params && [...params].length ? `?${params}` : "";
  location.hash = `#/${path}${query}`;
}

// A tiny Markdown renderer for cards: headings, bullet lists (nested), **bold**, `code`, backslash escapes.
export function markdown(text) {
  const root = h("div.md");
  let lists = [];
  for (const line of text.split("\n")) {
    const bullet = line.match(/^(\s*)- (.*)$/);
    if (bullet) {
      const depth = Math.floor(bullet[1].length / 2);
      while (lists.length > depth + 1) lists.pop();
      if (lists.length < depth + 1) {
        const ul = h("ul");
        (lists.length ? lists[lists.length - 1].lastElementChild || lists[lists.length - 1] : root).append(ul);
        lists.push(ul);
      }
      lists[lists.length - 1].append(h("li", {}, inline(bullet[2])));
      continue;
    }
    lists = [];
    const heading = line.match(/^(#{1,4}) (.*)$/);
    if (heading) root.append(h(`h${Math.min(heading[1].length + 1, 5)}`, {}, inline(heading[2])));
    else if (line.trim()) root.append(h("p", {}, inline(line)));
  }
  return root;
}

// A backslash-escaped character (cards escape the markup in names from the data), **bold**, `code`.
const INLINE = /\\([!-/:-@[-`{-~])|\*\*((?:\\.|[^\\])+?)\*\*|`([^`]+)`/g;

function inline(text) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    parts.push(text.slice(last, match.index));
    if (match[1] !== undefined) parts.push(match[1]);
    else if (match[2] !== undefined) parts.push(h("strong", {}, inline(match[2])));
    else parts.push(h("code", {}, match[3]));
    last = match.index + match[0].length;
  }
  parts.push(text.slice(last));
  return parts;
}
