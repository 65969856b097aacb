"""docs/prometheus-alerts.yml: valid rules, firing on the metrics the server exports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import service_missing
from tests.subprocesses import ROOT

RULES = ROOT / "docs" / "prometheus-alerts.yml"

# Series as the server exports them (offers/metrics.py), and what must fire.
UNIT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'liveoffers_decision_delay_seconds_bucket{{le="0.5"}}'
        values: '0+10x20'
      - series: 'liveoffers_decision_delay_seconds_bucket{{le="1.0"}}'
        values: '0+10x20'
      - series: 'liveoffers_decision_delay_seconds_bucket{{le="2.5"}}'
        values: '0+100x20'
      - series: 'liveoffers_decision_delay_seconds_bucket{{le="+Inf"}}'
        values: '0+100x20'
      - series: 'liveoffers_feature_psi{{feature="cart_value"}}'
        values: '0.05 0.05 0.9'
      - series: 'liveoffers_feature_psi{{feature="hidden"}}'
        values: '0.01 0.01 0.01'
      - series: 'liveoffers_records_dead_total{{kind="decision"}}'
        values: '0 0 1 1'
    alert_rule_test:
      - eval_time: 15m
        alertname: LiveOffersDecisionDelayHigh
        exp_alerts:
          - exp_labels: {{severity: critical}}
            exp_annotations:
              summary: "Decisions come more than a second after their pause (p99)"
              description: "p99 from a pause's deadline to its decision is 2.483s. Add workers (runstream), or look at the database and Redis."
      - eval_time: 1m
        alertname: LiveOffersFeatureDrift
        exp_alerts: []
      - eval_time: 2m
        alertname: LiveOffersFeatureDrift
        exp_alerts:
          - exp_labels: {{severity: warning, feature: cart_value}}
            exp_annotations:
              summary: "Shoppers drifted from the model's training data on cart_value"
              description: "PSI 0.90 over the last 24 hours. Train a model on recent decisions (train_model --shadow) and promote it when it is better."
      - eval_time: 3m
        alertname: LiveOffersRecordsSetAside
        exp_alerts:
          - exp_labels: {{severity: critical, kind: decision}}
            exp_annotations:
              summary: "Records could not be written and were set aside (decision)"
              description: "See Dead records in the admin."
"""


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        service_missing("promtool (Debian's prometheus package)")
    return str(found)


def test_the_rules_are_valid(promtool: str):
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_the_rules_fire_on_the_series_the_server_exports(promtool: str, tmp_path: Path):
    tests = tmp_path / "tests.yml"
    tests.write_text(UNIT_TESTS.format(rules=RULES))
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
