#!/usr/bin/env python3
"""Regenerates config/{rbac,manager,webhook}/*.yaml from the chart's default render.

    helm template step-operator charts/step-operator -n step-operator | config/from-chart.py

The kustomization.yaml files, config/default/namespace.yaml and config/samples/ are hand-written;
config/crd/bases is written by `make generate`. The chart e2e test (chart_kustomize_tree_renders)
fails when config/default and the chart's default install differ in objects or container args.
"""
import os
import re
import sys

DEST = {
    "controller-rbac.yaml": "rbac/controller.yaml",
    "webhook-rbac.yaml": "rbac/webhook.yaml",
    "approver-rbac.yaml": "rbac/approver.yaml",
    "controller-deployment.yaml": "manager/controller.yaml",
    "metrics.yaml": "manager/metrics-service.yaml",
    "webhook-deployment.yaml": "webhook/webhook.yaml",
    "mutatingwebhookconfiguration.yaml": "webhook/mutatingwebhookconfiguration.yaml",
    "webhook-configuration-policy.yaml": "webhook/configuration-policy.yaml",
}
HEADER = (
    "# Generated from charts/step-operator (helm template step-operator -n step-operator, default values);\n"
    "# keep in step with the chart (the chart e2e test compares them).\n"
)

root = os.path.dirname(os.path.abspath(__file__))
groups = {}
for doc in re.split(r"^---\s*$", sys.stdin.read(), flags=re.M):
    if not doc.strip():
        continue
    m = re.search(r"^# Source: step-operator/templates/(\S+)", doc, re.M)
    if m and m.group(1) == "crds.yaml":
        continue  # config/crd/bases, from `make generate`
    if not m or m.group(1) not in DEST:
        sys.exit(f"unexpected document from {m.group(1) if m else '?'}: extend DEST")
    body = re.sub(r"^# Source:.*\n", "", doc.strip("\n") + "\n", flags=re.M)
    body = re.sub(r"^\s*helm\.sh/chart:.*\n", "", body, flags=re.M)
    body = body.replace("app.kubernetes.io/managed-by: Helm", "app.kubernetes.io/managed-by: kustomize")
    groups.setdefault(DEST[m.group(1)], []).append(body)
for path, bodies in groups.items():
    with open(os.path.join(root, path), "w") as f:
        f.write(HEADER + "---\n".join(bodies))
