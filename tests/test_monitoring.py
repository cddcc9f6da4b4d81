"""The monitoring kit in packaging/: alerting rules checked and unit-tested by promtool,
and a Grafana dashboard whose every query names only metrics syncd really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, enable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from syncd.cli.main import main
from syncd.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "packaging" / "prometheus" / "syncd-rules.yml"
RULE_TESTS = ROOT / "packaging" / "prometheus" / "syncd-rules.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "syncd.json"
SAMPLE_CONFIG = ROOT / "etc" / "syncd.yaml"
RUNBOOK = "docs/operations.md#alerts"
SEVERITIES = {"page", "ticket"}
PROMETHEUS_OWN = {"up": {"instance", "job"}}  # the only metric not syncd's that may be used
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*", "$entity": ".*"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """No skipping: `make test` installs promtool (`make system-packages`), and a check
    that silently skips is a check that does not exist."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run `make system-packages` (Debian package prometheus)")
    return subprocess.run(
        [found, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


# --- what syncd exports -----------------------------------------------------------------


@dataclass
class Exported:
    """Sample names of a scrape, each with its label names and the values seen."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def add(self, name: str, labels: dict[str, str]) -> None:
        self.labels.setdefault(name, set()).update(labels)
        for label, value in labels.items():
            self.values.setdefault((name, label), set()).add(value)


@pytest.fixture(scope="module")
def exported() -> Exported:
    """What syncd's /metrics serves: its own registry (no process_* or python_*
    collectors), every family declared for one entity, one request observed."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.declare(["task"])
    metrics.observe_request("task", "200", 0.05)
    found = Exported()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.add(sample.name, sample.labels)
    for name, labels in PROMETHEUS_OWN.items():
        found.labels[name] = set(labels)
    return found


def test_the_scrape_has_syncds_families_and_no_process_collectors(exported: Exported) -> None:
    assert "syncd_sync_duration_seconds_bucket" in exported.labels
    assert exported.labels["syncd_sync_runs_total"] == {"entity", "kind", "status"}
    assert not [name for name in exported.labels if name.startswith(("process_", "python_"))]
    assert not [name for name in exported.labels if name.endswith("_created")]


def test_the_entry_point_turns_created_series_off_for_the_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """prometheus_client's switch is process-wide: syncd's main() flips it before any
    command runs, so a daemon's /metrics has no `*_created` series."""
    enable_created_metrics()  # type: ignore[no-untyped-call]
    with pytest.raises(SystemExit):
        main(["--help"])
    capsys.readouterr()
    registry = CollectorRegistry()
    Counter("probe", "A counter.", registry=registry).inc()
    assert b"probe_created" not in generate_latest(registry)


# --- PromQL, read just enough to name metrics and labels ---------------------------------

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
MATCHERS = re.compile(r"\{[^}]*\}")
RANGE = re.compile(r"\[[^\]]*\]")
NUMBER = re.compile(r"(?<![\w:.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers left once strings, label
    matchers, ranges, numbers, grouping clauses, function calls and keywords are gone."""
    text = STRING.sub('""', expr)
    text = MATCHERS.sub(" ", text)
    text = RANGE.sub(" ", text)
    text = GROUPING.sub(" ", text)
    text = NUMBER.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in KEYWORDS:
            continue  # a function, or an operator
        names.add(match.group())
    return names


def grouping_labels(expr: str) -> set[str]:
    text = STRING.sub('""', expr)
    return {
        label.strip()
        for _, labels in GROUPING.findall(text)
        for label in labels.split(",")
        if label.strip()
    }


def matchers(expr: str) -> Iterator[tuple[str, str, str, str]]:
    """(metric, label, operator, value) of every label matcher with a metric name."""
    for name, body in SELECTOR.findall(expr):
        for label, op, value in MATCHER.findall(body):
            yield name, label, op, value


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.95, sum by (le, kind) (rate(a_bucket{x=~"y|z"}[5m])))',
            {"a_bucket"},
        ),
        ('time() - max by (entity) (b_seconds{e!~"u"}) > 30 * 60', {"b_seconds"}),
        ("x_total / ignoring (status) y_total and on (job) z > 1e3", {"x_total", "y_total", "z"}),
        ('absent(up{job="syncd"})', {"up"}),
        ("rate(c_total[$__rate_interval]) > bool 0", {"c_total"}),
    ],
)
def test_metric_names_finds_the_selected_metrics_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# --- the queries ---------------------------------------------------------------------------


def load_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    assert [group["name"] for group in data["groups"]] == ["syncd"]
    rules: list[dict[str, Any]] = data["groups"][0]["rules"]
    return rules


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    text: str = query["query"] if isinstance(query, dict) else query
    return text


def all_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert, dashboard query and variable's selector."""
    found = [(f"alert {rule['alert']}", str(rule["expr"])) for rule in load_rules()]
    dashboard = load_dashboard()
    found += [
        (f"panel {title!r}", target["expr"]) for title, target in dashboard_targets(dashboard)
    ]
    for variable in dashboard["templating"]["list"]:
        match = LABEL_VALUES.match(variable_query(variable))
        assert match, f"variable {variable['name']}: not label_values(selector, label)"
        selector, label = match.groups()
        found.append((f"variable {variable['name']}", f"sum by ({label}) ({selector})"))
    return found


def test_every_query_names_only_metrics_syncd_exports(exported: Exported) -> None:
    problems = []
    for where, expr in all_queries():
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        for name in sorted(names - set(exported.labels)):
            problems.append(f"{where}: {name} is not exported by syncd")
    assert not problems, "\n".join(problems)


def test_every_label_in_a_query_is_one_syncd_exports(exported: Exported) -> None:
    every_label = set().union(*exported.labels.values()) | TARGET_LABELS | {"le"}
    problems = []
    for where, expr in all_queries():
        for label in sorted(grouping_labels(expr) - every_label):
            problems.append(f"{where}: no metric has the label {label}")
        for name, label, op, value in matchers(expr):
            known = exported.labels.get(name, set()) | TARGET_LABELS
            if label not in known:
                problems.append(f"{where}: {name} has no label {label}")
            elif op == "=" and label not in TARGET_LABELS | {"entity"}:
                seen = exported.values.get((name, label), set())
                if value not in seen:
                    problems.append(f"{where}: {name}{{{label}={value!r}}}: never {sorted(seen)}")
    assert not problems, "\n".join(problems)


# --- the alerting rules --------------------------------------------------------------------


def test_promtool_checks_the_rules_clean() -> None:
    checked = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout, checked.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    rules = load_rules()
    assert rules and all("alert" in rule for rule in rules), "alerting rules only"
    for rule in rules:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), name
        assert annotations.get("description", "").strip(), name
        assert annotations.get("runbook") == RUNBOOK, name
    assert len({rule["alert"] for rule in rules}) == len(rules), "alert names repeat"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    alerts = {rule["alert"] for rule in load_rules()}
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fired == set(), "no test makes these fire"
    assert alerts - quiet == set(), "no test keeps these quiet"


def test_the_daily_entity_regex_follows_the_sample_configuration() -> None:
    """SyncdEntityStale leaves out, and SyncdDailyEntityStale takes, exactly the entities
    etc/syncd.yaml runs at fixed times of day (`schedule: {at: ...}`)."""
    entities = yaml.safe_load(SAMPLE_CONFIG.read_text())["entities"]
    daily = {name for name, entity in entities.items() if "at" in entity["schedule"]}
    assert daily, "the sample configuration has no daily entity"
    exprs = {rule["alert"]: str(rule["expr"]) for rule in load_rules()}
    for alert, op, expected in (
        ("SyncdEntityStale", "!~", set(entities) - daily),
        ("SyncdDailyEntityStale", "=~", daily),
    ):
        [regex] = [v for _, label, o, v in matchers(exprs[alert]) if label == "entity" and o == op]
        matched = {name for name in entities if re.fullmatch(regex, name)}
        selected = matched if op == "=~" else set(entities) - matched
        assert selected == expected, alert


# --- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_has_what_grafana_needs_to_import_it() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "syncd" and dashboard["title"] == "syncd"
    assert 36 <= dashboard["schemaVersion"] <= 41
    [source] = dashboard["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), ids
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), panel["title"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == panel["datasource"], panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"instance", "entity"}
    for variable in variables.values():
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"]
        assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert variable_query(variables["instance"]) == "label_values(syncd_build_info, instance)"
    assert variable_query(variables["entity"]) == (
        'label_values(syncd_watermark_timestamp_seconds{instance=~"$instance"}, entity)'
    )


def test_every_dashboard_query_follows_the_variables(exported: Exported) -> None:
    """Every query is limited to $instance, and to $entity when its metric has one."""
    for title, target in dashboard_targets(load_dashboard()):
        expr = target["expr"]
        assert 'instance=~"$instance"' in expr, title
        if any("entity" in exported.labels[name] for name in metric_names(expr)):
            assert 'entity=~"$entity"' in expr, title


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """The queries are valid PromQL once Grafana has put its variables in."""
    rules = []
    for number, (title, target) in enumerate(dashboard_targets(load_dashboard())):
        expr = target["expr"]
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{title}: a variable the test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
