"""SARIF 2.1.0 output (``--format sarif``) and the JSON Schema of the vet report.

No network in CI, so the official SARIF schema cannot be fetched: ``SARIF_REQUIRED`` below is
a minimal structural schema written from the SARIF 2.1.0 specification (OASIS, sections 3.13
sarifLog, 3.14 run, 3.18 tool, 3.19 toolComponent, 3.27 result, 3.28 location, 3.29
physicalLocation, 3.4 artifactLocation, 3.30 region, 3.49 reportingDescriptor, 3.11 message):
the required properties, the level enum and the types, plus rule-id consistency checks.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from _vet_models import linear_classifier, save, write_probe
from click.testing import CliRunner
from test_cli_vet import SMALL
from test_vet_many import thresholds

from edgeguard.cli import main
from edgeguard.errors import DataError
from edgeguard.vetting import Finding, VetReport
from edgeguard.vetting.sarif import LEVELS, sarif_log
from edgeguard.vetting.schema import REPORT_SCHEMA_FILE, report_schema, validate_report

_LEVEL = {"enum": ["none", "note", "warning", "error"]}
_MESSAGE = {"type": "object", "anyOf": [{"required": ["text"]}, {"required": ["id"]}]}
SARIF_REQUIRED = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string", "format": "uri"},
        "runs": {"type": "array", "items": {"$ref": "#/$defs/run"}},
    },
    "$defs": {
        "run": {
            "type": "object",
            "required": ["tool"],
            "properties": {
                "tool": {
                    "type": "object",
                    "required": ["driver"],
                    "properties": {"driver": {"$ref": "#/$defs/toolComponent"}},
                },
                "results": {"type": "array", "items": {"$ref": "#/$defs/result"}},
            },
        },
        "toolComponent": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "version": {"type": "string"},
                "rules": {"type": "array", "items": {"$ref": "#/$defs/reportingDescriptor"}},
            },
        },
        "reportingDescriptor": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "shortDescription": {"type": "object", "required": ["text"]},
                "defaultConfiguration": {"type": "object", "properties": {"level": _LEVEL}},
                "properties": {"type": "object"},
            },
        },
        "result": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "ruleId": {"type": "string", "minLength": 1},
                "ruleIndex": {"type": "integer", "minimum": -1},
                "level": _LEVEL,
                "message": _MESSAGE,
                "locations": {"type": "array", "items": {"$ref": "#/$defs/location"}},
                "partialFingerprints": {"type": "object", "additionalProperties": {"type": "string"}},
                "properties": {"type": "object"},
            },
        },
        "location": {
            "type": "object",
            "properties": {
                "physicalLocation": {
                    "type": "object",
                    "anyOf": [{"required": ["artifactLocation"]}, {"required": ["address"]}],
                    "properties": {
                        "artifactLocation": {
                            "type": "object",
                            "required": ["uri"],
                            "properties": {"uri": {"type": "string", "format": "uri-reference"}},
                        },
                        "region": {"type": "object", "properties": {"startLine": {"type": "integer", "minimum": 1}}},
                    },
                },
                "logicalLocations": {"type": "array", "items": {"type": "object"}},
            },
        },
    },
}


def check_sarif(log: dict) -> list[dict]:
    """Validate ``log`` structurally and its rule ids / indices; returns its results."""
    jsonschema.Draft202012Validator(SARIF_REQUIRED).validate(log)
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    ids = [rule["id"] for rule in rules]
    assert len(ids) == len(set(ids)), "rule ids must be unique"
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    return run["results"]


def report_with(severities: list[str], verdict: str = "honest") -> VetReport:
    findings = [Finding(f"code-{s}", s, f"a {s} finding", "fix it", "node_1") for s in severities]
    return VetReport("m.onnx", "0" * 64, verdict, likelihood=0.25, findings=findings)


@pytest.mark.parametrize("severity", ["critical", "high", "medium", "low", "info"], ids=lambda s: s)
def test_one_result_per_finding_with_level_and_rule_id(severity):
    results = check_sarif(sarif_log([report_with([severity])]))
    finding, verdict = results
    assert finding["ruleId"] == f"code-{severity}" and finding["level"] == LEVELS[severity]
    assert {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}[severity] == (
        finding["level"]
    )
    assert finding["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("m.onnx")
    assert finding["locations"][0]["logicalLocations"] == [{"name": "node_1"}]
    assert "fix it" in finding["message"]["text"] and finding["properties"]["severity"] == severity
    assert verdict["ruleId"] == "verdict/honest"


@pytest.mark.parametrize(
    ("verdict", "level"), [("vicious", "error"), ("inconclusive", "warning"), ("honest", "note")], ids=lambda v: str(v)
)
def test_one_result_for_the_verdict(verdict, level):
    (result,) = check_sarif(sarif_log([report_with([], verdict)]))
    assert result["ruleId"] == f"verdict/{verdict}" and result["level"] == level
    assert result["properties"]["verdict"] == verdict and result["properties"]["likelihood"] == 0.25


def test_many_models_share_one_run_and_errors_are_results():
    log = sarif_log([report_with(["high", "low"]), report_with(["high"], "vicious")], errors=[("x.onnx", "boom")])
    results = check_sarif(log)
    assert [r["ruleId"] for r in results] == [
        "code-high", "code-low", "verdict/honest", "code-high", "verdict/vicious", "vet-error",
    ]  # fmt: skip
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert sorted(r["id"] for r in rules) == ["code-high", "code-low", "verdict/honest", "verdict/vicious", "vet-error"]
    assert results[-1]["level"] == "error" and "boom" in results[-1]["message"]["text"]
    with pytest.raises(jsonschema.ValidationError):  # the structural check does reject a broken log
        check_sarif({**log, "version": "2.0.0"})
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        check_sarif(broken)


@pytest.fixture
def model_and_probe(tmp_path):
    return save(linear_classifier(), tmp_path / "m.onnx"), write_probe(tmp_path / "p.npz", 600)


def test_cli_sarif_output_of_a_real_vet(tmp_path, monkeypatch, model_and_probe):
    model, probe = model_and_probe
    monkeypatch.chdir(tmp_path)
    args = ["vet", "m.onnx", "-p", str(probe), "--format", "sarif", "-q", "--thresholds", thresholds(tmp_path, -100.0)]
    result = CliRunner().invoke(main, [*args, *SMALL])
    assert result.exit_code == 1, result.output
    log = json.loads(result.stdout)
    results = check_sarif(log)
    assert results[-1]["ruleId"] == "verdict/vicious" and results[-1]["level"] == "error"
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "m.onnx" for r in results)
    assert log["runs"][0]["tool"]["driver"]["name"] == "edgeguard"
    as_json = CliRunner().invoke(main, [*args[:4], "--format", "json", *args[6:], *SMALL])
    codes = [f["code"] for f in json.loads(as_json.stdout)["findings"]]
    assert [r["ruleId"] for r in results[:-1]] == codes  # one result per finding, rule id = its code


# -- the JSON Schema of the report ------------------------------------------------------


def test_schema_is_packaged_and_valid():
    assert REPORT_SCHEMA_FILE.name == "report.schema.json" and REPORT_SCHEMA_FILE.is_file()
    jsonschema.Draft202012Validator.check_schema(report_schema())


@pytest.mark.parametrize("case", ["honest", "vicious", "refused"], ids=lambda c: c)
def test_real_reports_match_the_schema(tmp_path, model_and_probe, case):
    model, probe = model_and_probe
    if case == "refused":
        model = tmp_path / "garbage.onnx"
        model.write_bytes(b"garbage")
    leakage = 100.0 if case == "honest" else -100.0
    args = [
        "vet",
        str(model),
        "-p",
        str(probe),
        "--format",
        "json",
        "-q",
        "--thresholds",
        thresholds(tmp_path, leakage),
    ]
    result = CliRunner().invoke(main, [*args, *SMALL])
    data = json.loads(result.stdout)
    validate_report(data)
    assert data["exit_code"] == result.exit_code == {"honest": 0, "vicious": 1, "refused": 2}[case]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"verdict": "maybe"}, "verdict"),
        ({"model_sha256": "abc"}, "model_sha256"),
        ({"exit_code": 4}, "exit_code"),
        ({"findings": [{"code": "x", "severity": "fatal", "message": "m"}]}, "findings/0/severity"),
        ({"likelihood": 1.5}, "likelihood"),
    ],
    ids=["verdict", "sha", "exit-code", "severity", "likelihood"],
)
def test_schema_rejects_broken_reports(change, where):
    data = {**report_with(["low"]).to_dict(), **change}
    with pytest.raises(DataError, match=where):
        validate_report(data)
    validate_report(report_with(["low"]).to_dict())  # the unchanged report passes
