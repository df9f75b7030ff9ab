// The findings inbox: filters, a keyset-paged table, live updates by polling.
import { ms, timeChart } from "./chart.js";
import { api, clear, fmtTime, h, routeTo, section, TYPE_LABEL, typePill, verdictPill } from "./util.js";

const POLL_MS = 5000;
const FILTERS = ["start", "end", "type", "stream", "min_confidence", "verdict"];

export async function inboxPage(view, route) {
  const params = route.params;
  const cursors = [null];
  const table = h("div.table-wrap");
  const timeline = h("div.chart-box#timeline");
  const status = h("div.status-line");
  const live = h("span.live", { title: "The list refreshes itself when new findings arrive" }, "live");
  let known = null;

  const streamNames = h("datalist#stream-names");
  const form = filterForm(params, streamNames);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value && !(name === "verdict" && value === "any")) next.set(name, value);
    }
    routeTo("", next);
  });

  async function load(cursor) {
    const query = new URLSearchParams(params);
    query.set("limit", "50");
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/explorer/api/findings?${query}`);
    clear(table, findingsTable(page.items));
    drawTimeline(timeline, page.items);
    const pageNo = cursors.length;
    clear(
      status,
      `${page.items.length} finding(s), page ${pageNo}, window ${fmtTime(page.start)} to ${fmtTime(page.end)} UTC `,
      h("button.small#prev-page", { disabled: pageNo === 1, onclick: () => { cursors.pop(); load(cursors[cursors.length - 1]); } }, "← Previous"),
      h("button.small#next-page", { disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); load(page.next_cursor); } }, "Next →"),
      live,
    );
  }

  async function poll() {
    try {
      const pulse = await api("/explorer/api/pulse");
      const stamp = `${pulse.count}@${pulse.newest_window}`;
      if (known !== null && stamp !== known && cursors.length === 1) {
        await load(null);
        live.classList.add("flash");
        setTimeout(() => live.classList.remove("flash"), 1500);
      }
      known = stamp;
    } catch {
      live.classList.add("down");
    }
  }

  clear(view, h("div.page-head", {}, h("h1", {}, "Findings"), form), section("Inbox", status, timeline, table));
  await load(null);
  // The stream names only suggest: the inbox does not wait for them.
  api("/explorer/api/streams")
    .then(({ streams }) => clear(streamNames, streams.map((s) => h("option", { value: s.stream }))))
    .catch(() => {});
  await poll();
  const timer = setInterval(poll, POLL_MS);
  return () => clearInterval(timer);
}

function filterForm(params, streamNames) {
  const select = (name, options, label) =>
    h("label", {}, label, h("select", { name }, options.map(([value, text]) =>
      h("option", { value, selected: (params.get(name) || "") === value }, text))));
  return h(
    "form.filters#filters",
    {},
    h("label", {}, "From (UTC)", h("input", { name: "start", placeholder: "2026-01-05T00:00:00Z", value: params.get("start") || "", size: 20 })),
    h("label", {}, "To", h("input", { name: "end", placeholder: "newest", value: params.get("end") || "", size: 20 })),
    select("type", [["", "all types"], ...Object.entries(TYPE_LABEL)], "Type"),
    h("label", {}, "Stream", h("input", { name: "stream", list: "stream-names", placeholder: "all streams", value: params.get("stream") || "", size: 24 }), streamNames),
    h("label", {}, "Min confidence", h("input", { name: "min_confidence", type: "number", min: 0, max: 1, step: 0.05, value: params.get("min_confidence") || "", size: 5 })),
    select("verdict", [["any", "any verdict"], ["unreviewed", "unreviewed"], ["confirmed", "confirmed"], ["false_alarm", "false alarm"]], "Verdict"),
    h("button", { type: "submit" }, "Apply"),
  );
}

function findingsTable(items) {
  if (!items.length) return h("p.empty", {}, "No findings match these filters.");
  return h(
    "table.grid#findings",
    {},
    h("thead", {}, h("tr", {}, ["Time (UTC)", "Type", "Stream", "Confidence", "Verdict", "Algorithms", "What changed"].map((t) => h("th", {}, t)))),
    h("tbody", {}, items.map((item) => h(
      "tr.finding-row",
      { dataset: { id: item.pattern_id }, onclick: () => routeTo(`finding/${encodeURIComponent(item.pattern_id)}`) },
      h("td.num", {}, fmtTime(item.timestamp)),
      h("td", {}, typePill(item.type)),
      h("td", {}, item.source_streams.join(", ")),
      h("td", {}, confidenceBar(item.confidence)),
      h("td", {}, verdictPill(item.verdict)),
      h("td", {}, algorithms(item)),
      h("td.state", { title: `${item.details.prev_state} → ${item.details.new_state}` }, item.details.new_state),
    ))),
  );
}

export function confidenceBar(value) {
  return h("span.conf", {}, h("span.conf-track", {}, h("span.conf-bar", { style: `width:${Math.round(value * 100)}%` })),
    h("span.conf-num", {}, value.toFixed(2)));
}

export function algorithms(pattern) {
  const names = (pattern.algorithms.length ? pattern.algorithms : [pattern.algorithm]).map((a) => a.name);
  return h("span.algos", {}, names.join(", "), pattern.cross_validated ? h("span.pill.xv", { title: "Reported by both engines" }, "cross-validated") : null);
}

// The page's findings on one time axis, by type, at the height of their confidence.
function drawTimeline(box, items) {
  if (!items.length) {
    clear(box);
    return;
  }
  const times = items.map((i) => ms(i.timestamp));
  const span = Math.max(times[times.length - 1] - times[0], 60000);
  const series = Object.keys(TYPE_LABEL).map((type) => {
    const own = items.filter((i) => i.type === type);
    return { name: type, times: own.map((i) => ms(i.timestamp)), values: own.map((i) => i.confidence), kind: "dots", cls: `big t-${type}` };
  }).filter((s) => s.times.length);
  timeChart(box, {
    start: times[0] - span * 0.02, end: times[times.length - 1] + span * 0.02,
    panels: [{ title: "confidence of the findings on this page, by type", height: 56, domain: [0, 1.08], series }],
  });
}
