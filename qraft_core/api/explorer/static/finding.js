// One finding: its series with the finding marked, the card (en/zh, LLM-based on demand),
// contributors, the algorithms that agreed, the raw context rows, verdicts and a replay.
import { ms, timeChart } from "./chart.js";
import { algorithms, confidenceBar } from "./inbox.js";
import { api, clear, errorBox, fmtNum, fmtTime, h, markdown, own, section, typePill, verdictPill } from "./util.js";

const REPLAY_POLL_MS = 1500;
const TERMINAL = new Set(["succeeded", "failed", "regression"]);
const LEVEL_TYPES = new Set(["concept_drift", "cluster_change"]);

export async function findingPage(view, route) {
  const id = route.path[1];
  if (id === undefined) throw new Error("No finding named in the address: open one from the inbox.");
  const minutes = route.params.get("minutes") || "15";
  const data = await api(`/explorer/api/finding/${encodeURIComponent(id)}?minutes=${encodeURIComponent(minutes)}`);
  const pattern = data.pattern;
  const timers = [];
  const chartBox = h("div.chart-box#finding-chart");
  const head = h(
    "div.page-head",
    {},
    h("h1", {}, typePill(pattern.type), " ", fmtTime(pattern.timestamp), " UTC ", h("span.muted", {}, pattern.source_streams.join(", "))),
    h("div.head-facts", {}, confidenceBar(pattern.confidence), " ", h("span#verdict", {}, verdictPill(data.verdict)), " ", algorithms(pattern)),
  );
  const left = h(
    "div.col-main",
    {},
    section(`Series ${fmtTime(data.start, false)}–${fmtTime(data.end, false)} UTC`, legend(), columnsToggle(data, chartBox), chartBox,
      h("p.hint", {}, "Hover for values; drag to zoom, double-click to zoom out. ",
        h("a", { href: `#/finding/${encodeURIComponent(id)}?minutes=${Number(minutes) * 2}` }, "wider window"))),
    section("What changed", stateTable(pattern)),
    data.headlines.length ? section(`Matching headlines (${data.headlines.length})`, headlineList(data.headlines)) : null,
    section("Raw context rows", contextRows(id)),
  );
  const right = h(
    "div.col-side",
    {},
    section("Verdict", actions(id)),
    section("Card", cardView(id)),
    section("Top contributors", contributorBars(pattern.explain.top_contributors)),
    section("Algorithms that agreed", agreed(pattern)),
    section("Replay", replayBox(data.replay, timers)),
  );
  clear(view, head, h("div.columns", {}, left, right));
  timeChart(chartBox, chartSpec(data, false));
  return () => timers.forEach((t) => clearInterval(t));
}

function legend() {
  return h("div.legend", {},
    h("span.key.k-finding", {}, "finding"), h("span.key.k-change", {}, "change point"),
    h("span.key.k-window", {}, "detection window"), h("span.key.k-signal", {}, "alarm bars"),
    h("span.key.k-level", {}, "before / after level"));
}

// Shows the contributing feature columns first; every other column the stream has on demand.
function columnsToggle(data, chartBox) {
  const total = new Set(data.streams.flatMap((s) => Object.keys(s.columns))).size;
  let all = false;
  const button = h("button.small#all-columns", {
    onclick: () => {
      all = !all;
      button.textContent = all ? "Contributing columns only" : `All ${total} feature columns`;
      timeChart(chartBox, chartSpec(data, all));
    },
  }, `All ${total} feature columns`);
  return h("div.toolbar", {}, button);
}

// Panels: per stream the raw values of its clean events, then its feature columns
// (the contributors, or all of them), then its events per bar.
export function chartSpec(data, allColumns) {
  const pattern = data.pattern;
  const findingTime = ms(pattern.timestamp);
  const changeTime = ms(data.change_point);
  const windowStart = ms(pattern.window_start);
  const contributors = new Set(pattern.explain.top_contributors.map((c) => c.field));
  const panels = [];
  const bands = [{ from: windowStart, to: windowStart + 60000, cls: "window" }];
  for (const stream of data.streams) {
    const times = stream.times.map(ms);
    const barStep = times.length > 1 ? times[1] - times[0] : 10000;
    const alarmTimes = data.signals.filter((s) => s.stream === stream.stream).map((s) => ms(s.time));
    for (const t of alarmTimes) bands.push({ from: t, to: t + barStep, cls: "signal" });
    const rawTimes = stream.raw.times.map(ms);
    for (const [name, values] of Object.entries(stream.raw.columns)) {
      panels.push({ title: `${stream.stream} · raw ${name}`, height: 80, series: [{ name, times: rawTimes, values, kind: "dots", cls: "raw" }] });
    }
    const showAll = allColumns || !Object.keys(stream.columns).some((name) => contributors.has(name));
    const names = Object.keys(stream.columns)
      .filter((name) => showAll || contributors.has(name))
      .sort((a, b) => Number(contributors.has(b)) - Number(contributors.has(a)));
    for (const name of names) {
      const values = stream.columns[name];
      const panel = {
        title: `${stream.stream} · ${name}${contributors.has(name) ? "  ★ contributor" : ""}`,
        height: contributors.has(name) ? 90 : 64,
        series: [{ name, times, values, kind: "line", cls: contributors.has(name) ? "hot" : "" }],
        points: alarmTimes.map((t) => ({ time: t, cls: "signal", label: "alarm bar" })),
      };
      // A drift's two levels, a cluster change's two regime centres: the means either side of the change.
      if (LEVEL_TYPES.has(pattern.type) && contributors.has(name)) panel.levels = levels(times, values, changeTime);
      panels.push(panel);
    }
    panels.push({ title: `${stream.stream} · events per bar`, height: 44, series: [{ name: "events", times, values: stream.event_count, kind: "bars", cls: "count" }] });
  }
  const markers = [{ time: findingTime, cls: "finding", label: "finding" }];
  if (changeTime !== findingTime) markers.push({ time: changeTime, cls: "change", label: "change point" });
  return { start: ms(data.start), end: ms(data.end), panels, markers, bands };
}

// Mean of the series before and after the change point: the two levels of a drift.
function levels(times, values, changeTime) {
  const mean = (pick) => {
    const chosen = values.filter((v, i) => v !== null && pick(times[i]));
    // A running mean: a sum of values near ±1e308 would overflow to ±Infinity.
    return chosen.length ? chosen.reduce((m, v, i) => m - m / (i + 1) + v / (i + 1), 0) : null;
  };
  const before = mean((t) => t < changeTime);
  const after = mean((t) => t >= changeTime);
  const out = [];
  if (before !== null) out.push({ from: times[0], to: changeTime, value: before, cls: "before", label: `before ${fmtNum(before)}` });
  if (after !== null) out.push({ from: changeTime, to: times[times.length - 1], value: after, cls: "after", label: `after ${fmtNum(after)}` });
  return out;
}

function stateTable(pattern) {
  const details = pattern.details;
  const rows = [
    ["Before", details.prev_state],
    ["After", details.new_state],
    ...Object.entries(details.metric_changes).map(([name, value]) => [
      `Δ ${name}`, `${fmtNum(value)} ${own(details.metric_units, name) || ""}`,
    ]),
  ];
  // Metrics measured on clean data before and after the finding, paired by name.
  const measured = Object.keys(details.metrics).filter((k) => k.endsWith("_before"))
    .map((k) => k.slice(0, -7)).filter((name) => Object.hasOwn(details.metrics, `${name}_after`));
  for (const name of measured) {
    rows.push([`${name}`, `${fmtNum(details.metrics[`${name}_before`])} → ${fmtNum(details.metrics[`${name}_after`])}`]);
  }
  return h("table.kv#what-changed", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))));
}

function headlineList(headlines) {
  return h("table.grid.compact#headlines", {}, headlines.map((line) =>
    h("tr", {}, h("td.num", {}, fmtTime(line.time, false)), h("td", {}, line.text),
      h("td.muted", {}, Object.values(line.fields).filter((v) => !/^\d{4}-\d\d-\d\dT/.test(v)).join(" · ")))));
}

function contributorBars(contributors) {
  if (!contributors.length) return h("p.empty", {}, "No contributors recorded.");
  const top = Math.max(...contributors.map((c) => Math.abs(c.score))) || 1;
  return h("div.bars#contributors", {}, contributors.map((c) => h(
    "div.bar-row", {},
    h("span.bar-label", {}, c.field),
    h("span.bar-track", {}, h("span.bar-fill", { style: `width:${(Math.abs(c.score) / top) * 100}%` })),
    h("span.bar-value", {}, fmtNum(c.score, 3)),
  )));
}

function agreed(pattern) {
  const list = pattern.algorithms.length ? pattern.algorithms : [pattern.algorithm];
  return h("div", {},
    h("table.grid.compact#algorithms", {}, list.map((a) => h("tr", {},
      h("td", {}, a.name), h("td.num", {}, a.version),
      h("td.params", {}, Object.entries(a.params).map(([k, v]) => `${k}=${v}`).join(" "))))),
    h("p.muted", {}, pattern.cross_validated ? "Cross-validated: reported by both engines." : `${list.length} algorithm(s), one engine.`));
}

function cardView(id) {
  const box = h("div.card#card");
  const body = h("div.card-body");
  const llm = h("div.llm");
  let lang = "en";
  const load = async () => {
    try {
      const card = await api(`/explain/${encodeURIComponent(id)}?lang=${lang}`);
      clear(body, markdown(card.markdown));
    } catch (error) {
      clear(body, errorBox(error));
    }
  };
  const langButton = (code, text) => h("button.small.lang", {
    dataset: { lang: code },
    onclick: (event) => {
      lang = code;
      box.querySelectorAll(".lang").forEach((b) => b.classList.toggle("on", b === event.target));
      load();
    },
  }, text);
  const llmButton = h("button.small.llm-button#llm", {
    title: "Asks the configured LLM endpoint; the rule-based card above stays as it is",
    onclick: async () => {
      clear(llm, h("p.muted", {}, "Asking the LLM…"));
      try {
        const card = await api(`/explain/${encodeURIComponent(id)}?mode=llm&lang=${lang}`);
        if (card.llm_text) {
          clear(llm, h("div.llm-label", {}, "LLM-based"), h("p#llm-text", {}, card.llm_text),
            h("p.muted", {}, `model: ${card.llm_model}; the facts above are the rule-based card's`));
        } else {
          clear(llm, h("p.muted#llm-text", {}, `No LLM-based explanation: ${card.note || "the endpoint gave none"}`));
        }
      } catch (error) {
        clear(llm, errorBox(error));
      }
    },
  }, "LLM-based explanation");
  clear(box, h("div.toolbar", {}, langButton("en", "English"), langButton("zh", "中文"), llmButton), body, llm);
  box.querySelector(".lang").classList.add("on");
  load();
  return box;
}

function contextRows(id) {
  const box = h("div.table-wrap.scroll#context");
  api(`/pattern/${encodeURIComponent(id)}/context?limit=200`).then((page) => {
    clear(box,
      h("p.muted", {}, `${page.count} row(s) from ${fmtTime(page.start)} to ${fmtTime(page.end)} UTC${page.next_cursor ? " (first 200)" : ""}`),
      h("table.grid.compact", {},
        h("thead", {}, h("tr", {}, ["Time", "Source", "Type", "Payload"].map((t) => h("th", {}, t)))),
        h("tbody", {}, page.rows.map((row) => h("tr", {},
          h("td.num", {}, fmtTime(row.timestamp, false)), h("td", {}, row.source), h("td", {}, row.type),
          h("td.payload", {}, row.payload))))));
  }).catch((error) => clear(box, errorBox(error)));
  return box;
}

function actions(id) {
  const note = h("textarea#note", { rows: 2, placeholder: "Note (optional)", maxlength: 4000 });
  const author = h("input#author", { placeholder: "Your name", maxlength: 200 });
  const result = h("div.result#annotation-result");
  const history = h("ul.annotations#annotations");
  const refresh = async () => {
    const { annotations } = await api(`/pattern/${encodeURIComponent(id)}/annotations`);
    clear(history, annotations.length ? annotations.slice().reverse().map((a) => h("li", {},
      verdictPill(a.label === "note" ? "note" : a.label), ` ${fmtTime(a.created_at)} `, a.author ? `${a.author}: ` : "", a.note)) : h("li.muted", {}, "No annotations yet."));
  };
  const send = (label) => async () => {
    try {
      const saved = await api(`/pattern/${encodeURIComponent(id)}/annotations`, {
        method: "POST", body: { label, note: note.value, author: author.value },
      });
      clear(result, h("span.ok", {}, `Saved: ${saved.label.replace("_", " ")} (${fmtTime(saved.created_at)})`));
      if (label !== "note") clear(document.getElementById("verdict"), verdictPill(label));
      note.value = "";
      await refresh();
    } catch (error) {
      clear(result, errorBox(error.status === 401 || error.status === 503 ? new Error(`${error.message}. Enter the write key at the top.`) : error));
    }
  };
  refresh().catch((error) => clear(history, errorBox(error)));
  return h("div.actions", {},
    h("div.buttons", {},
      h("button.confirm#confirm", { onclick: send("confirmed") }, "✓ Confirm"),
      h("button.false#false-alarm", { onclick: send("false_alarm") }, "✗ False alarm"),
      h("button#add-note", { onclick: send("note") }, "Add note")),
    h("div.inputs", {}, author, note), result, history);
}

function replayBox(replay, timers) {
  const status = h("div.replay-status#replay-status", {}, "Not started.");
  const show = (record) => {
    const summary = record.summary || {};
    clear(status,
      h(`span.pill.r-${record.status}`, { dataset: { status: record.status } }, record.status),
      ` replay ${record.id}`,
      record.finished_at ? ` finished ${fmtTime(record.finished_at)}` : ` started ${fmtTime(record.started_at)}`,
      summary.pattern_events !== undefined ? h("div.muted", {}, `${summary.partitions} windows, ${summary.events} clean events, ${summary.pattern_events} finding(s), ${summary.seconds}s`) : null,
      summary.error ? h("div.error", {}, summary.error) : null);
  };
  const button = h("button#replay", {
    onclick: async () => {
      button.disabled = true;
      try {
        const started = await api("/replay", { method: "POST", body: replay });
        show({ ...started, started_at: new Date().toISOString() });
        const timer = setInterval(async () => {
          try {
            const record = await api(`/explorer/api/replays/${encodeURIComponent(started.id)}`);
            show(record);
            if (TERMINAL.has(record.status)) { clearInterval(timer); button.disabled = false; }
          } catch (error) {
            clear(status, errorBox(error));
          }
        }, REPLAY_POLL_MS);
        timers.push(timer);
      } catch (error) {
        clear(status, errorBox(error));
        button.disabled = false;
      }
    },
  }, "Replay this window");
  return h("div", {},
    h("p", {}, `Re-runs the pipeline over ${fmtTime(replay.start)} to ${fmtTime(replay.end, false)} UTC (${replay.sources.join(", ") || "all sources"}); the detectors restore their state from the window before.`),
    button, status);
}
