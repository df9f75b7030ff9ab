// The pipeline: rows per step in flow order, dead letters by reason, the newest rows of
// each step and how far each lags. Refreshes itself.
import { api, clear, fmtInt, fmtTime, h, section } from "./util.js";

const REFRESH_MS = 5000;

export async function pipelinePage(view) {
  const render = async () => {
    const data = await api("/explorer/api/pipeline");
    clear(view,
      h("div.page-head", {}, h("h1", {}, "Pipeline"), h("span.muted", {}, `as of ${fmtTime(data.lag.now)} UTC`),
        h("a", { href: `${location.protocol}//${location.hostname}:${data.dagster_port}/`, target: "_blank", rel: "noopener" },
          "Dagster UI: lineage, runs, partitions ↗")),
      section("Flow", flow(data)),
      h("div.columns", {},
        h("div.col-main", {}, section("Newest rows per step", newest(data.steps))),
        h("div.col-side", {}, section("Lag", lag(data.lag)), section(`Dead letters (${fmtInt(data.dead_letters.total)})`, letters(data.dead_letters)))));
  };
  await render();
  const timer = setInterval(() => render().catch(() => {}), REFRESH_MS);
  return () => clearInterval(timer);
}

function flow(data) {
  const boxes = [];
  data.steps.forEach((step, index) => {
    if (index === 1) boxes.push(h("div.flow-arrow", {}, "→"), h("div.flow-step.dead#step-dead_letters", {},
      h("div.flow-name", {}, "dead letters"), h("div.flow-count", {}, fmtInt(data.dead_letters.total)),
      h("div.flow-sub", {}, `${data.dead_letters.reasons.length} reason(s)`)));
    if (index > 0) boxes.push(h("div.flow-arrow", {}, "→"));
    boxes.push(h(`div.flow-step#step-${step.step}`, { dataset: { rows: step.rows } },
      h("div.flow-name", {}, step.step),
      h("div.flow-count", {}, fmtInt(step.rows)),
      h("div.flow-sub", {}, step.table),
      h("div.flow-sub", {}, `newest ${fmtTime(step.newest)}`),
      h("div.flow-groups", {}, Object.entries(step.by_group).sort().map(([k, v]) => h("div", {}, `${k || "—"}: ${fmtInt(v)}`)))));
  });
  return h("div.flow", {}, boxes);
}

function newest(steps) {
  return steps.map((step) => {
    const rows = step.newest_rows;
    if (!rows.length) return h("div.sub", {}, h("h3", {}, step.step), h("p.empty", {}, "empty"));
    const columns = Object.keys(rows[0]);
    return h("div.sub", {}, h("h3", {}, `${step.step} · ${step.table}`),
      h("div.table-wrap.scroll-x", {}, h("table.grid.compact.nowrap", {},
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
        h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", {}, format(row[c])))))))));
  });
}

function format(value) {
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return fmtTime(value);
  return value === null || value === undefined ? "—" : String(value);
}

function lag(info) {
  const rows = [
    ["Newest event (event time)", fmtTime(info.newest_event)],
    ["Last landed (wall clock)", fmtTime(info.last_landed_at)],
    ["Since the last landing", info.seconds_since_landing === null ? "—" : `${fmtInt(info.seconds_since_landing)} s`],
    ["Newest feature bar behind raw", info.features_behind_raw_s === null ? "—" : `${fmtInt(info.features_behind_raw_s)} s of event time`],
  ];
  return h("table.kv#lag", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td.num", {}, v))));
}

function letters(dead) {
  if (!dead.reasons.length) return h("p.empty", {}, "No dead letters.");
  return h("table.grid.compact#dead-letters", {},
    h("thead", {}, h("tr", {}, ["Stage", "Source", "Reason", "Count"].map((t) => h("th", {}, t)))),
    h("tbody", {}, dead.reasons.map((r) => h("tr", {}, h("td", {}, r.stage), h("td", {}, r.source), h("td.reason", {}, r.reason), h("td.num", {}, fmtInt(r.count))))));
}
