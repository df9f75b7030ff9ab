"""The explorer in headless Chromium against a real API over the pipeline's real output."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from qraft_core.events import iso
from qraft_core.replays import ReplayRegistry
from qraft_core.store.base import Filter


def _findings(rt: Any) -> list[dict[str, Any]]:
    frame = rt.store.select(
        "pattern_events", columns=["pattern_id", "type", "timestamp", "window_start"],
        order_by=("window_start", "pattern_id"),
    )
    return frame.to_dicts()


def _open_first_finding(page: Any, url: str) -> dict[str, Any]:
    page.goto(f"{url}/#/")
    first = page.locator("#findings .finding-row").first
    pattern_id = first.get_attribute("data-id")
    first.click()
    page.locator("#finding-chart svg.chart").wait_for(state="attached")
    return {"pattern_id": pattern_id}


def test_the_inbox_lists_the_findings_of_the_pipeline(page, explorer_url, explorer_store):
    expected = _findings(explorer_store)
    # The demo's first planted anomalies fall inside the slice: the pipeline found some.
    assert expected
    page.goto(f"{explorer_url}/#/")
    rows = page.locator("#findings .finding-row")
    rows.first.wait_for()
    assert [rows.nth(i).get_attribute("data-id") for i in range(rows.count())] == [
        f["pattern_id"] for f in expected
    ]
    assert rows.first.locator("td").first.inner_text() == expected[0]["timestamp"].strftime("%Y-%m-%d %H:%M:%S")
    # Filtering on a type the slice has none of empties the table.
    page.goto(f"{explorer_url}/#/?type=cluster_change")
    page.locator("text=No findings match these filters.").wait_for()


def test_a_finding_page_draws_its_series_with_the_finding_marked(page, explorer_url, explorer_store):
    opened = _open_first_finding(page, explorer_url)
    rt = explorer_store
    finding = next(f for f in _findings(rt) if f["pattern_id"] == opened["pattern_id"])
    chart = page.locator("#finding-chart svg.chart")
    # The finding line sits inside the plot at the finding's time.
    marker = chart.locator("line.marker.finding").first
    x = float(marker.get_attribute("x1"))
    width = float(chart.get_attribute("width"))
    assert 64 < x < width - 16
    assert chart.locator("text.marker-label").first.text_content() == "finding"
    # Every alarm bar of the detectors on this stream in the window is shaded.
    body = json.loads(
        rt.store.select("pattern_events", where=[Filter("pattern_id", "=", finding["pattern_id"])],
                        columns=["body"])["body"][0]
    )
    stream = body["source_streams"][0]
    page.wait_for_load_state("networkidle")  # the page's own requests are done: one store session at a time
    page_data = page.evaluate(f"fetch('/explorer/api/finding/{finding['pattern_id']}').then(r => r.json())")
    assert "signals" in page_data, page_data
    start, end = (datetime.fromisoformat(page_data[k].replace("Z", "+00:00")) for k in ("start", "end"))
    alarms = rt.store.select("detections", where=[Filter("stream", "=", stream)], columns=["time"])["time"]
    in_window = [t for t in alarms if start <= t < end]
    assert [s["time"] for s in page_data["signals"]] == [iso(t) for t in sorted(in_window)]
    assert in_window, "the finding's own alarm is in its window"
    first_panel = chart.locator("g.panel").first
    assert first_panel.locator("rect.band.signal").count() == len(in_window)
    # The columns drawn are the ones the features table holds for the stream, none hard-coded.
    names = rt.store.select("features", where=[Filter("stream", "=", stream)], columns=["names"], limit=1)
    page.locator("#all-columns").click()
    titles = chart.locator("text.panel-title").all_text_contents()
    drawn = {re.sub(r"\s+★ contributor$", "", t).split(" · ", 1)[1] for t in titles if " · " in t}
    assert set(names["names"][0]) <= drawn
    contributors = [c["field"] for c in body["explain"]["top_contributors"]]
    assert page.locator("#contributors .bar-label").all_inner_texts() == contributors


def test_a_confirm_click_is_stored_and_audited(page, explorer_url, explorer_store, write_key):
    opened = _open_first_finding(page, explorer_url)
    pattern_id = opened["pattern_id"]
    page.locator("#confirm").click()
    # Without the key the API refuses, and the page says what to do.
    page.locator("#annotation-result .error").wait_for()
    assert "write key" in page.locator("#annotation-result").inner_text()
    page.fill("#api-key", write_key)
    page.press("#api-key", "Enter")
    page.fill("#author", "ana")
    page.fill("#note", "matches the planted spike")
    page.locator("#confirm").click()
    page.locator("#annotation-result .ok").wait_for()
    assert page.locator("#verdict").inner_text() == "confirmed"
    store = explorer_store.store
    stored = store.select("annotations", where=[Filter("pattern_id", "=", pattern_id)]).to_dicts()
    assert [(a["label"], a["author"], a["note"]) for a in stored] == [
        ("confirmed", "ana", "matches the planted spike")
    ]
    audit = store.select("audit_log", where=[Filter("action", "=", "annotate"), Filter("target", "=", pattern_id)])
    assert audit.height == 1 and audit["actor"][0].startswith("key:")
    assert json.loads(audit["after"][0])["label"] == "confirmed"
    # The inbox's verdict filter now finds exactly this finding.
    page.goto(f"{explorer_url}/#/?verdict=confirmed")
    rows = page.locator("#findings .finding-row")
    rows.first.wait_for()
    assert [rows.nth(i).get_attribute("data-id") for i in range(rows.count())] == [pattern_id]


def test_a_replay_started_from_the_page_completes(page, explorer_url, explorer_store, write_key):
    _open_first_finding(page, explorer_url)
    page.fill("#api-key", write_key)
    page.press("#api-key", "Enter")
    page.locator("#replay").click()
    status = page.locator("#replay-status [data-status]")
    status.wait_for()
    page.wait_for_function(
        "() => ['succeeded', 'failed', 'regression'].includes("
        "document.querySelector('#replay-status [data-status]')?.dataset.status)",
        timeout=120_000,
    )
    replay_id = re.search(r"replay (\S+)", page.locator("#replay-status").inner_text()).group(1)
    record = ReplayRegistry(explorer_store.data_dir / "replays").get(replay_id)
    assert record is not None and record.status == "succeeded", record
    assert status.get_attribute("data-status") == "succeeded"
    # The card's context window, 5 minutes either side of the finding, with the same findings again.
    assert (record.start, record.end) == ("2026-01-05T00:20:00.000Z", "2026-01-05T00:30:00.000Z")
    window = (datetime(2026, 1, 5, 0, 20, tzinfo=UTC), datetime(2026, 1, 5, 0, 30, tzinfo=UTC))
    stored = explorer_store.store.count("pattern_events", start=window[0], end=window[1]).get("", 0)
    assert record.summary["pattern_events"] == stored > 0


def test_the_pipeline_and_streams_pages_show_the_store(page, explorer_url, explorer_store):
    store = explorer_store.store
    page.goto(f"{explorer_url}/#/pipeline")
    page.locator("#step-findings").wait_for()
    for step, table in (("raw", "raw_events"), ("clean", "clean_events"), ("features", "features"),
                        ("findings", "pattern_events")):
        assert page.locator(f"#step-{step}").get_attribute("data-rows") == str(store.count(table)[""])
    letters = store.count("dead_letters", group_by="reason")
    shown = page.locator("#dead-letters tbody tr")
    assert shown.count() == len(letters) and sum(
        int(shown.nth(i).locator("td").last.inner_text()) for i in range(shown.count())
    ) == sum(letters.values())
    page.goto(f"{explorer_url}/#/streams")
    page.locator("#stream-chart svg.chart").wait_for(state="attached")
    streams = sorted(store.count("features", group_by="stream"))
    assert page.locator("#streams .stream-row td:first-child").all_inner_texts() == streams


# Names a data set may hold: markup, a forged card line, a bidi override that reverses what follows it.
HOSTILE_STREAM = "m:<img src=x onerror=alert(1)>"
HOSTILE_FIELD = "</script><img src=x onerror=alert(7)>cpu\u202e"
HOSTILE_CARD_FIELD = "x\n- **Forged:** [c](javascript:alert(2))\u202e"


def _with_hostile_names(route: Any) -> None:
    """The finding's real data, its stream and a contributing column renamed to hostile names."""
    response = route.fetch()
    data = response.json()
    for stream in data["streams"]:
        stream["stream"] = HOSTILE_STREAM
        stream["columns"] = {HOSTILE_FIELD: next(iter(stream["columns"].values())), **stream["columns"]}
    data["pattern"]["explain"]["top_contributors"].insert(0, {"field": HOSTILE_FIELD, "score": 0.5})
    route.fulfill(response=response, json=data)


def _with_hostile_card_line(route: Any) -> None:
    """The finding's real card with a line naming a hostile field, as the card renderer writes it."""
    from qraft_core.display import markdown_inline

    response = route.fetch()
    card = response.json()
    card["markdown"] += f"\n- **By how much:** {markdown_inline(HOSTILE_CARD_FIELD)} +45"
    route.fulfill(response=response, json=card)


def test_names_from_the_data_are_shown_as_text_on_the_finding_page(page, explorer_url):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.route(re.compile(r"/explorer/api/finding/"), _with_hostile_names)
    page.route(re.compile(r"/explain/"), _with_hostile_card_line)
    _open_first_finding(page, explorer_url)
    overlay = page.locator("#finding-chart svg.chart rect.overlay")
    box = overlay.bounding_box()
    for fraction in (0.2, 0.5, 0.8):
        page.mouse.move(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
    tip = page.locator("#finding-chart .chart-tip")
    shown = tip.text_content()
    assert f"{HOSTILE_STREAM} · {HOSTILE_FIELD.removesuffix(chr(0x202E))}\\u202e  ★ contributor: " in shown
    # The override is shown as its escape, not applied: it cannot reverse the value after it.
    assert "\u202e" not in shown
    card = page.locator("#card .card-body")
    card.locator("li", has_text="Forged").wait_for()
    assert card.locator("strong", has_text="Forged").count() == 0 and card.locator("a").count() == 0
    assert card.locator("li", has_text="Forged").inner_text() == (
        "By how much: x\\n- **Forged:** [c](javascript:alert(2))\\u202e +45"
    )
    assert page.locator("img").count() == 0
    assert dialogs == []


def test_the_explorer_allows_only_its_own_scripts(page, explorer_url):
    response = page.goto(f"{explorer_url}/#/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.locator("#findings .finding-row").first.wait_for()


def _with_builtin_field_names(route: Any) -> None:
    """The finding's real data with changes measured on fields named like what every JS object inherits."""
    response = route.fetch()
    data = response.json()
    details = data["pattern"]["details"]
    details["metric_changes"] = {"constructor": 1.0, "toString": 2.0, "__proto__": 3.0, "valueOf": 4.0}
    details["metric_units"] = {"valueOf": "trades"}
    details["metrics"] = {"constructor_before": 5.0, "constructor_after": 6.0, "toString_before": 7.0}
    route.fulfill(response=response, json=data)


def test_fields_named_like_object_builtins_show_only_their_own_units(page, explorer_url):
    # Before, "Δ constructor" read "1 function Object() { [native code] }".
    page.route(re.compile(r"/explorer/api/finding/"), _with_builtin_field_names)
    _open_first_finding(page, explorer_url)
    rows = page.locator("#what-changed tr")
    shown = {rows.nth(i).locator("th").inner_text(): rows.nth(i).locator("td").inner_text() for i in range(rows.count())}
    assert {k: v.strip() for k, v in shown.items() if k not in ("Before", "After")} == {
        "Δ constructor": "1", "Δ toString": "2", "Δ __proto__": "3", "Δ valueOf": "4 trades", "constructor": "5 → 6",
    }


def _with_values_between(low: float, high: float) -> Any:
    """The finding's real data as a drift whose contributing column swings between `low` and `high`."""
    def fulfill(route: Any) -> None:
        response = route.fetch()
        data = response.json()
        data["pattern"]["type"] = "concept_drift"
        stream = data["streams"][0]
        name = next(iter(stream["columns"]))
        stream["columns"][name] = [high if i % 2 else low for i in range(len(stream["times"]))]
        data["pattern"]["explain"]["top_contributors"] = [{"field": name, "score": 1.0}]
        route.fulfill(response=response, json=data)
    return fulfill


# Up to the largest doubles: before, the value axis' ticks stepped past them to Infinity and never stopped.
@pytest.mark.parametrize(("low", "high"), [(-1e308, 1e308), (0.0, 1.79e308), (-1.7e308, 1.7e308)])
def test_values_near_the_float_limits_draw_at_finite_places(page, explorer_url, low, high):
    # Before, the padded range overflowed: lines at y=-Infinity and levels "before Infinity".
    page.route(re.compile(r"/explorer/api/finding/"), _with_values_between(low, high))
    _open_first_finding(page, explorer_url)
    chart = page.locator("#finding-chart svg.chart")
    chart.locator("line.level").first.wait_for(state="attached")
    drawn = chart.evaluate("""svg => [...svg.querySelectorAll('line, path, rect, circle, text')].flatMap(
        el => ['x1', 'x2', 'y1', 'y2', 'd', 'y', 'cy', 'height'].map(a => el.getAttribute(a)).filter(Boolean))""")
    assert drawn and not [a for a in drawn if "Infinity" in a or "NaN" in a]
    labels = chart.locator("text.level-label").all_text_contents()
    assert labels and not [label for label in labels if "Infinity" in label or "NaN" in label]


def test_addresses_naming_no_readable_finding_show_an_error(page, explorer_url):
    # Before, a malformed escape left a blank page (an uncaught URIError) and an empty id asked for "undefined".
    page.goto(f"{explorer_url}/#/finding/%E0%A4%A")
    assert "This address cannot be read" in page.locator("#view .error").inner_text()
    page.goto(f"{explorer_url}/#/finding/")
    assert "No finding named in the address" in page.locator("#view .error").inner_text()
    page.goto(f"{explorer_url}/#/constructor")
    assert page.locator("#view .error").inner_text() == "No page constructor"


def test_the_inbox_shows_its_findings_without_waiting_for_the_stream_names(page, explorer_url, explorer_store):
    # Before, it waited for the whole stream catalog, only to fill the stream filter's drop-down.
    held: list[Any] = []
    page.route(re.compile(r"/explorer/api/streams"), lambda route: held.append(route))
    page.goto(f"{explorer_url}/#/")
    page.locator("#findings .finding-row").first.wait_for()
    assert held
    held[0].continue_()
    suggested = page.locator("#stream-names option")
    suggested.first.wait_for(state="attached")
    assert sorted(suggested.evaluate_all("options => options.map(o => o.value)")) == sorted(
        explorer_store.store.count("features", group_by="stream"))
