#!/usr/bin/env python3
"""Render this component's files from their one source in deploy/:

  deploy/prometheus/alerts.yaml     -> prometheusrule.yaml (the same groups, as a PrometheusRule)
  deploy/grafana/sse-gateway.json   -> sse-gateway.json    (a copy: kustomize reads files
                                                            only inside the component)

Run after editing either source:   python3 k8s/components/monitoring/render.py
deploy/check.sh runs it with --check, which writes nothing, prints a diff of what is out
of date and exits 1. Standard library only.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
RULES_SOURCE = REPO / "deploy/prometheus/alerts.yaml"
DASHBOARD_SOURCE = REPO / "deploy/grafana/sse-gateway.json"

RULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by render.py in this directory: edit that
# file, then run `python3 k8s/components/monitoring/render.py`. deploy/check.sh fails when
# this copy differs from what render.py makes.
#
# The Prometheus Operator loads PrometheusRules chosen by its ruleSelector (and
# ruleNamespaceSelector). kube-prometheus-stack selects `release: <helm release name>`:
# add that label in your overlay if yours does.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: sse-gateway
  labels:
    app.kubernetes.io/name: sse-gateway
    app.kubernetes.io/part-of: sse-gateway
    app.kubernetes.io/component: monitoring
spec:
"""


def prometheus_rule(source: str) -> str:
    """The rule file's `groups:` and everything after it, indented under `spec:`.

    A textual move, not a YAML round trip: the expressions keep their layout and
    comments, so the two files read the same.
    """
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("groups:")), None)
    if start is None:
        raise SystemExit(f"{RULES_SOURCE.relative_to(REPO)}: no top-level `groups:`")
    body = "".join(f"  {line}\n" if line else "\n" for line in lines[start:])
    return RULE_HEADER + body


def outputs() -> dict[Path, str]:
    return {
        HERE / "prometheusrule.yaml": prometheus_rule(RULES_SOURCE.read_text()),
        HERE / "sse-gateway.json": DASHBOARD_SOURCE.read_text(),
    }


def main() -> int:
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] and not check:
        print("usage: render.py [--check]", file=sys.stderr)
        return 2
    stale = 0
    for path, wanted in outputs().items():
        current = path.read_text() if path.exists() else ""
        if current == wanted:
            continue
        rel = path.relative_to(REPO)
        if check:
            stale += 1
            print(f"{rel} is out of date; run python3 k8s/components/monitoring/render.py")
            diff = difflib.unified_diff(current.splitlines(), wanted.splitlines(),
                                        f"{rel} (committed)", f"{rel} (rendered)", lineterm="", n=1)
            for line in list(diff)[:40]:
                print(f"  {line}")
        else:
            path.write_text(wanted)
            print(f"wrote {rel}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
