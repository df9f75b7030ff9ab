// Streams: per stream a chart of every feature column with its findings overlaid,
// and per detector its alarm scores over time and its human-verdict precision.
import { ms, timeChart } from "./chart.js";
import { api, clear, fmtInt, fmtNum, fmtTime, h, own, routeTo, section } from "./util.js";

export async function streamsPage(view, route) {
  const { streams } = await api("/explorer/api/streams");
  if (!streams.length) {
    clear(view, h("h1", {}, "Streams"), h("p.empty", {}, "No feature bars yet: the pipeline has not run."));
    return null;
  }
  const chosen = route.params.get("stream") || streams[0].stream;
  const query = new URLSearchParams({ stream: chosen });
  for (const name of ["start", "end"]) if (route.params.get(name)) query.set(name, route.params.get(name));
  const [data, stats] = await Promise.all([api(`/explorer/api/stream?${query}`), api("/annotations/stats")]);
  const list = h("table.grid.compact#streams", {},
    h("thead", {}, h("tr", {}, ["Stream", "Columns", "Bars", "First bar", "Last bar", "Findings"].map((t) => h("th", {}, t)))),
    h("tbody", {}, streams.map((s) => h("tr.stream-row", {
      class: s.stream === chosen ? "stream-row selected" : "stream-row",
      onclick: () => routeTo("streams", new URLSearchParams({ stream: s.stream })),
    }, h("td", {}, s.stream), h("td.muted", {}, s.columns.length), h("td.num", {}, fmtInt(s.bars)),
    h("td.num", {}, fmtTime(s.first_bar)), h("td.num", {}, fmtTime(s.last_bar)), h("td.num", {}, s.findings)))));
  const chartBox = h("div.chart-box#stream-chart");
  clear(view,
    h("div.page-head", {}, h("h1", {}, "Streams")),
    section("Streams with feature bars", list),
    section(`${chosen} · ${fmtTime(data.start)} to ${fmtTime(data.end)} UTC · ${data.findings.length} finding(s)`,
      h("div.legend", {}, ["concept_drift", "anomaly", "cluster_change", "freq_pattern"].map((t) => h(`span.key.k-${t}`, {}, t.replace("_", " "))),
        h("span.key.k-signal", {}, "detector alarm")),
      chartBox, h("p.hint", {}, "Click a finding in the table below to open it; drag to zoom.")),
    h("div.columns", {},
      h("div.col-main", {}, section("Findings on this stream", findingList(data.findings))),
      h("div.col-side", {}, section("Detectors", h("div.scroll-x", {}, detectorTable(data.signals, stats.detectors))))));
  timeChart(chartBox, streamSpec(data));
  return null;
}

function streamSpec(data) {
  const times = data.times.map(ms);
  const alarms = data.signals.map((s) => ms(s.time));
  const panels = Object.entries(data.columns).map(([name, values]) => ({
    title: name, height: 52, series: [{ name, times, values, kind: "line" }],
    points: alarms.map((t) => ({ time: t, cls: "signal", label: "alarm" })),
  }));
  panels.push({ title: "events per bar", height: 40, series: [{ name: "events", times, values: data.event_count, kind: "bars", cls: "count" }] });
  const detectors = [...new Set(data.signals.map((s) => s.detector))].sort();
  for (const detector of detectors) {
    const own = data.signals.filter((s) => s.detector === detector);
    const scores = own.map((s) => s.score);
    panels.push({
      title: `alarm score · ${detector}`, height: 40, domain: [0, Math.max(1, ...scores) * 1.05],
      series: [{ name: detector, times: own.map((s) => ms(s.time)), values: scores, kind: "bars", cls: "score", stepMs: times.length > 1 ? times[1] - times[0] : 10000 }],
    });
  }
  const markers = data.findings.map((f) => ({ time: ms(f.timestamp), cls: `finding t-${f.type}` }));
  return { start: ms(data.start), end: ms(data.end), panels, markers, bands: [] };
}

function findingList(findings) {
  if (!findings.length) return h("p.empty", {}, "No findings on this stream in this range.");
  return h("table.grid.compact", {}, h("tbody", {}, findings.map((f) => h("tr.finding-row", {
    dataset: { id: f.pattern_id }, onclick: () => routeTo(`finding/${encodeURIComponent(f.pattern_id)}`),
  }, h("td.num", {}, fmtTime(f.timestamp)), h("td", {}, h(`span.pill.t-${f.type}`, {}, f.type.replace("_", " "))),
  h("td.num", {}, f.confidence.toFixed(2)), h("td", {}, f.algorithm), h("td", {}, h(`span.pill.v-${f.verdict}`, {}, f.verdict.replace("_", " ")))))));
}

function detectorTable(signals, stats) {
  const names = [...new Set([...signals.map((s) => s.detector)])].sort();
  if (!names.length) return h("p.empty", {}, "No detector alarms in this range.");
  return h("table.grid.compact#detectors", {},
    h("thead", {}, h("tr", {}, ["Detector", "Algorithm", "Alarms", "Mean score", "Verdict precision"].map((t) => h("th", {}, t)))),
    h("tbody", {}, names.map((name) => {
      const alarms = signals.filter((s) => s.detector === name);
      const verdicts = own(stats, alarms[0].algorithm);
      return h("tr", {}, h("td", {}, name), h("td", {}, alarms[0].algorithm), h("td.num", {}, alarms.length),
        h("td.num", {}, fmtNum(alarms.reduce((a, s) => a + s.score, 0) / alarms.length, 3)),
        h("td.num", {}, verdicts && verdicts.precision !== null ? `${(verdicts.precision * 100).toFixed(0)}% of ${verdicts.confirmed + verdicts.false_alarm}` : "no verdicts"));
    })));
}
