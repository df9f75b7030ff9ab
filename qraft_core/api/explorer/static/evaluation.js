// Evaluation against the ground truth file: scores per type, each truth item with the
// finding that matched it and its delay, and the false alarms.
import { ApiError, api, clear, fmtNum, fmtTime, h, own, section, TYPE_LABEL } from "./util.js";

export async function evaluationPage(view) {
  let data;
  try {
    data = await api("/explorer/api/evaluation");
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      clear(view, h("h1", {}, "Evaluation"), h("p.empty", {}, error.message));
      return null;
    }
    throw error;
  }
  const report = data.report;
  clear(view,
    h("div.page-head", {}, h("h1", {}, "Evaluation"),
      h("span.muted", {}, `${data.truth_file} · ${fmtTime(report.window.start)} to ${fmtTime(report.window.end)} UTC · tolerance ${report.tolerance_s}s, ${report.early_s}s early allowed`)),
    section("Scores (detectors vs. a periodic baseline with the same number of alarms)", scores(report)),
    h("div.columns", {},
      h("div.col-main", {}, section(`Truth items (${data.items.length})`, truthTable(data.items))),
      h("div.col-side", {}, section(`False alarms (${data.false_alarms.length})`, falseAlarms(data.false_alarms)))));
  return null;
}

function scores(report) {
  const kinds = Object.keys(report.detectors);
  const pct = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(0)}%`);
  return h("table.grid#scores", {},
    h("thead", {}, h("tr", {}, ["Type", "Truth", "Findings", "Hits", "Precision", "Recall", "Mean delay", "p95 delay", "False alarms", "Baseline precision", "Baseline recall"].map((t) => h("th", {}, t)))),
    h("tbody", {}, kinds.map((kind) => {
      const d = report.detectors[kind];
      const b = own(report.baseline, kind) || {};
      return h(`tr${kind === "overall" ? ".total" : ""}`, {}, h("td", {}, own(TYPE_LABEL, kind) || kind),
        h("td.num", {}, d.truth), h("td.num", {}, d.findings), h("td.num", {}, d.true_positives),
        h("td.num", {}, pct(d.precision)), h("td.num", {}, pct(d.recall)),
        h("td.num", {}, d.delay_mean_s === null ? "—" : `${fmtNum(d.delay_mean_s)} s`),
        h("td.num", {}, d.delay_p95_s === null ? "—" : `${fmtNum(d.delay_p95_s)} s`),
        h("td.num", {}, d.false_alarms), h("td.num.muted", {}, pct(b.precision)), h("td.num.muted", {}, pct(b.recall)));
    })));
}

const findingLink = (id, text) => h("a", { href: `#/finding/${encodeURIComponent(id)}` }, text);

function truthTable(items) {
  return h("table.grid.compact#truth", {},
    h("thead", {}, h("tr", {}, ["Time (UTC)", "Type", "Stream", "Matched finding", "Delay"].map((t) => h("th", {}, t)))),
    h("tbody", {}, items.map((item) => h(`tr.${item.finding ? "hit" : "miss"}`, {},
      h("td.num", {}, fmtTime(item.time)), h("td", {}, own(TYPE_LABEL, item.type) || item.type), h("td", {}, item.stream),
      h("td", {}, item.finding ? findingLink(item.finding, fmtTime(item.finding_time, false)) : h("span.missed", {}, "missed")),
      h("td.num", {}, item.delay_s === null ? "—" : `${fmtNum(item.delay_s)} s`)))));
}

function falseAlarms(alarms) {
  if (!alarms.length) return h("p.empty", {}, "None.");
  return h("table.grid.compact#false-alarms", {},
    h("tbody", {}, alarms.map((a) => h("tr", {}, h("td.num", {}, findingLink(a.finding, fmtTime(a.time))),
      h("td", {}, own(TYPE_LABEL, a.type) || a.type), h("td", {}, a.stream)))));
}
