"""The deploy configs are valid and speak of metrics that exist: promtool
accepts the Prometheus config and rules, and every metric an alert uses is
exported by the module (its /metrics) or by the daemons' library."""

import os
import re
import subprocess

import requests

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROM = os.path.join(TOP, "config", "prometheus")


def test_promtool_accepts_config_and_rules():
    r = subprocess.run(["promtool", "check", "config", "prometheus.yml"],
                       cwd=PROM, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_alerts_use_exported_metrics(base_url):
    rules = open(os.path.join(PROM, "alerts.yml")).read()
    used = set(re.findall(r"\b(elearn_[a-z_]+)", rules))
    exported = requests.get(base_url + "/metrics").text
    lib = ""         # the workers' library and every daemon
    for d in os.listdir(os.path.join(TOP, "workers")):
        for name in os.listdir(os.path.join(TOP, "workers", d)):
            if name.endswith(".c"):
                lib += open(os.path.join(TOP, "workers", d, name)).read()
    for m in used:
        family = re.sub(r"_(bucket|sum|count)$", "", m)
        assert ("# TYPE %s " % family) in exported or \
            ('"%s"' % family) in lib, m + " is exported by nothing"
