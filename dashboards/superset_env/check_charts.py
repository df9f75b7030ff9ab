"""Ask a running Superset for every chart's data, as its dashboard would, and print the rows each returns.

    QRAFT_SUPERSET_PASSWORD=... python dashboards/superset_env/check_charts.py --port 8088

Exits 1 when a chart errors or returns no rows. Standard library only: runs with any Python 3.11.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any


class Superset:
    def __init__(self, base: str, user: str, password: str) -> None:
        self.base, self.token, self.csrf = base, "", ""
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        login = {"username": user, "password": password, "provider": "db", "refresh": True}
        self.token = self.call("POST", "/api/v1/security/login", login)[1]["access_token"]
        self.csrf = self.call("GET", "/api/v1/security/csrf_token/")[1]["result"]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
            request.add_header("X-CSRFToken", self.csrf)
        try:
            with self.opener.open(request) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()[:500]


def query(params: dict[str, Any], suffix: str) -> dict[str, Any]:
    """The query a chart of the bundle sends (see the chart types used in dashboards/superset/charts)."""
    if params.get("query_mode") == "raw":
        order = [json.loads(o) for o in params["order_by_cols"]]
        return {"columns": params["all_columns"], "metrics": [], "orderby": order, "row_limit": 100}
    if params["viz_type"] == "bubble_v2":
        return {"columns": [params["entity"], params["series"]],
                "metrics": [params["x"], params["y"], params["size"]], "row_limit": 100}
    columns: list[Any] = list(params.get("groupby" + suffix, []))
    if "x_axis" in params:
        columns.insert(0, {"columnType": "BASE_AXIS", "expressionType": "SQL", "sqlExpression": params["x_axis"],
                           "label": params["x_axis"], "timeGrain": params["time_grain_sqla"]})
    filters = [{"col": f["subject"], "op": "==", "val": f["comparator"]}
               for f in params.get("adhoc_filters" + suffix, []) if f["operator"] == "=="]
    metrics = params.get("metrics" + suffix, []) + ([params["metric"]] if "metric" in params else [])
    return {"columns": columns, "metrics": metrics, "filters": filters, "row_limit": 100}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("QRAFT_SUPERSET_PORT", 8088)))
    args = parser.parse_args()
    superset = Superset(f"http://127.0.0.1:{args.port}", os.environ.get("QRAFT_SUPERSET_ADMIN", "admin"),
                        os.environ["QRAFT_SUPERSET_PASSWORD"])
    listing = {"page_size": 100, "columns": ["id", "slice_name", "params", "datasource_id"]}
    charts = superset.call("GET", "/api/v1/chart/?q=" + urllib.parse.quote(json.dumps(listing)))[1]["result"]
    good = 0
    for chart in sorted(charts, key=lambda c: c["slice_name"]):
        params = json.loads(chart["params"])
        suffixes = ("", "_b") if params["viz_type"] == "mixed_timeseries" else ("",)
        body = {"datasource": {"id": chart["datasource_id"], "type": "table"},
                "queries": [query(params, s) for s in suffixes], "result_format": "json", "result_type": "full"}
        status, answer = superset.call("POST", "/api/v1/chart/data", body)
        rows = [len(r["data"]) for r in answer["result"]] if status == 200 else []
        good += bool(rows) and all(rows)
        print(f"{chart['slice_name']}: " + (f"rows {rows}" if status == 200 else f"HTTP {status} {answer}"))
    print(f"{good} of {len(charts)} charts returned rows")
    return 0 if good == len(charts) else 1


if __name__ == "__main__":
    sys.exit(main())
