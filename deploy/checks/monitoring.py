"""Static checks of the dashboard and the alerting rules (no Grafana runs here).

Run by deploy/check.sh as `python monitoring.py REPO RENDERED_DIR`. Checks:
- deploy/grafana/sse-gateway.json is an importable Grafana dashboard: title, uid,
  schemaVersion, a Prometheus data source variable that every panel and target uses (no
  `${DS_...}` import inputs, so the same file serves the UI import and the sidecar), a node
  (`instance`) variable that every query filters on, unique panel ids, panels on the
  24-column grid without overlaps, targets with unique refIds, only defined variables;
- every sse_gateway_* metric that gateway/src/metrics.rs registers is on a panel;
- deploy/prometheus/alerts.yaml: each alert has a severity, a summary and a description,
  and deploy/prometheus/alerts.test.yaml has a case where it fires and one where it must
  not;
- k8s/components/monitoring/ is what its render.py makes from those two files, and every
  rendered overlay carries the PrometheusRule (the same groups) and the dashboard ConfigMap
  (label grafana_dashboard: "1", the same JSON).
Prints nothing and exits 0 when all hold; otherwise one line per problem, exit 1.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

DASHBOARD = Path("deploy/grafana/sse-gateway.json")
RULES = Path("deploy/prometheus/alerts.yaml")
RULE_TESTS = Path("deploy/prometheus/alerts.test.yaml")
RENDER = Path("k8s/components/monitoring/render.py")
# Grafana 10's schema; older Grafana refuses nothing but may not know newer panel options.
MIN_SCHEMA_VERSION = 36
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline", "gauge", "bargauge", "table",
               "heatmap", "text", "status-history"}
BUILT_INS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
             "__range_ms", "__dashboard", "__from", "__to"}
NODE_VARIABLE = "instance"
SEVERITIES = {"warning", "critical"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")

problems: list[str] = []


def problem(text: str) -> None:
    problems.append(text)


def all_panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def check_dashboard(repo: Path) -> dict:
    where = str(DASHBOARD)
    try:
        dashboard = json.loads((repo / DASHBOARD).read_text())
    except (OSError, json.JSONDecodeError) as error:
        problem(f"{where}: {error}")
        return {}
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list),
                      ("templating", dict), ("time", dict)):
        if not isinstance(dashboard.get(key), kind):
            problem(f"{where}: `{key}` missing or not a {kind.__name__}")
    if not isinstance(dashboard.get("uid"), str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"]):
        problem(f"{where}: uid must be 1-40 characters of [A-Za-z0-9_-]")
    if isinstance(dashboard.get("schemaVersion"), int) and dashboard["schemaVersion"] < MIN_SCHEMA_VERSION:
        problem(f"{where}: schemaVersion {dashboard['schemaVersion']} is older than {MIN_SCHEMA_VERSION}")
    if dashboard.get("id") is not None:
        problem(f"{where}: `id` must be null (Grafana assigns it on import)")
    if "__inputs" in dashboard or "${DS_" in json.dumps(dashboard):
        problem(f"{where}: uses import inputs (${{DS_...}}); the sidecar cannot fill them: use the "
                "data source variable")

    variables = dashboard.get("templating", {}).get("list", [])
    names = [v.get("name") for v in variables]
    if len(names) != len(set(names)):
        problem(f"{where}: duplicate variable names {names}")
    sources = [v for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if len(sources) != 1:
        problem(f"{where}: expected one data source variable of type prometheus, found {len(sources)}")
        return dashboard
    source_uid = f"${{{sources[0]['name']}}}"

    def uses_source(thing: dict) -> bool:
        ds = thing.get("datasource")
        return isinstance(ds, dict) and ds.get("uid") == source_uid and ds.get("type") == "prometheus"

    if NODE_VARIABLE not in names:
        problem(f"{where}: no `{NODE_VARIABLE}` variable to pick nodes")
    defined = set(names) | BUILT_INS
    for variable in variables:
        if variable.get("type") == "query":
            if not uses_source(variable):
                problem(f"{where}: variable {variable.get('name')} does not query {source_uid}")
            if variable.get("includeAll") and not variable.get("allValue"):
                problem(f"{where}: variable {variable.get('name')} has All without an allValue "
                        "(Grafana would send every value as one long regex)")

    ids = [p.get("id") for p in all_panels(dashboard)]
    if len(ids) != len(set(ids)) or not all(isinstance(i, int) for i in ids):
        problem(f"{where}: panel ids must be unique integers")
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        title = panel.get("title", "?")
        if panel.get("type") not in PANEL_TYPES:
            problem(f"{where}: panel {title!r} has type {panel.get('type')!r}")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            problem(f"{where}: panel {title!r} has no integer gridPos")
            continue
        if grid["x"] < 0 or grid["w"] < 1 or grid["h"] < 1 or grid["x"] + grid["w"] > 24:
            problem(f"{where}: panel {title!r} is off the 24-column grid: {grid}")
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                if (x, y) in cells:
                    problem(f"{where}: panels {cells[(x, y)]!r} and {title!r} overlap")
                    break
                cells[(x, y)] = title
            else:
                continue
            break
        if panel.get("type") in ("row", "text"):
            continue
        if not uses_source(panel):
            problem(f"{where}: panel {title!r} does not use the data source {source_uid}")
        targets = panel.get("targets", [])
        if not targets:
            problem(f"{where}: panel {title!r} has no query")
        ref_ids = [t.get("refId") for t in targets]
        if len(ref_ids) != len(set(ref_ids)) or not all(ref_ids):
            problem(f"{where}: panel {title!r} needs a distinct refId per target")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                problem(f"{where}: panel {title!r} target {target.get('refId')} has no expr")
                continue
            if not uses_source(target):
                problem(f"{where}: panel {title!r} target {target.get('refId')} does not use {source_uid}")
            used = {m.group(1) or m.group(2) or m.group(3) for m in VARIABLE.finditer(expr)}
            if used - defined:
                problem(f"{where}: panel {title!r} uses undefined variables {sorted(used - defined)}")
            if NODE_VARIABLE not in used:
                problem(f"{where}: panel {title!r} target {target.get('refId')} ignores ${NODE_VARIABLE}")
    return dashboard


def check_metrics_on_panels(repo: Path, dashboard: dict) -> None:
    source = (repo / "gateway/src/metrics.rs").read_text()
    # Every `new("name"` in metrics.rs: the registry's (prefixed) and the process' own.
    registered = {n if n.startswith("process_") else f"sse_gateway_{n}"
                  for n in re.findall(r'new\(\s*"([a-z0-9_]+)"', source)}
    exprs = " ".join(t.get("expr", "") for p in all_panels(dashboard) for t in p.get("targets", []))
    shown = {re.sub(r"_(bucket|sum|count)$", "", n)
             for n in re.findall(r"\b(?:sse_gateway|process)_[a-z0-9_]+", exprs)}
    for name in sorted(registered - shown):
        problem(f"{DASHBOARD}: no panel shows {name} (registered in gateway/src/metrics.rs); add one")


def check_rules(repo: Path) -> list[dict]:
    groups = yaml.safe_load((repo / RULES).read_text()).get("groups", [])
    alerts = [r for g in groups for r in g.get("rules", []) if "alert" in r]
    if not alerts:
        problem(f"{RULES}: no alerting rules")
    tests = yaml.safe_load((repo / RULE_TESTS).read_text()).get("tests", [])
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for rule in alerts:
        name = rule["alert"]
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problem(f"{RULES}: {name} has no severity label in {sorted(SEVERITIES)}")
        for key in ("summary", "description"):
            if not rule.get("annotations", {}).get(key):
                problem(f"{RULES}: {name} has no {key} annotation")
        mine = [c for c in cases if c.get("alertname") == name]
        if not any(c.get("exp_alerts") for c in mine):
            problem(f"{RULE_TESTS}: no case where {name} fires")
        if not any(not c.get("exp_alerts") for c in mine):
            problem(f"{RULE_TESTS}: no case where {name} must stay quiet")
    for case in cases:
        if case.get("alertname") not in {r["alert"] for r in alerts}:
            problem(f"{RULE_TESTS}: tests {case.get('alertname')}, which alerts.yaml does not have")
    return groups


def check_rendered(repo: Path, rendered: Path, groups: list[dict], dashboard: dict) -> None:
    stale = subprocess.run([sys.executable, str(repo / RENDER), "--check"],
                           capture_output=True, text=True, timeout=60)
    if stale.returncode != 0:
        problems.extend(stale.stdout.splitlines() or [stale.stderr.strip()])
    files = sorted(rendered.glob("*.yaml"))
    if not files:
        problem(f"no rendered manifests in {rendered}")
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
        if len(rules) != 1:
            problem(f"{path.name}: expected one PrometheusRule, found {len(rules)}")
        elif rules[0].get("spec", {}).get("groups") != groups:
            problem(f"{path.name}: the PrometheusRule's groups differ from {RULES}")
        maps = [d for d in docs if d.get("kind") == "ConfigMap"
                and d.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1"]
        if len(maps) != 1:
            problem(f"{path.name}: expected one ConfigMap labelled grafana_dashboard: \"1\", found {len(maps)}")
            continue
        data = maps[0].get("data", {})
        if len(data) != 1 or json.loads(next(iter(data.values()), "null")) != dashboard:
            problem(f"{path.name}: the dashboard ConfigMap does not hold {DASHBOARD}")


def main() -> int:
    repo, rendered = Path(sys.argv[1]), Path(sys.argv[2])
    dashboard = check_dashboard(repo)
    if dashboard:
        check_metrics_on_panels(repo, dashboard)
    groups = check_rules(repo)
    check_rendered(repo, rendered, groups, dashboard)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
