"""SARIF 2.1.0 output of the vet, for code-scanning tools (GitHub code scanning, Azure DevOps, ...).

One SARIF log, one run (tool "edgeguard"), and per vetted model: one result per finding
(rule id = the finding's code) and one for the verdict (rule id ``verdict/<verdict>``,
or ``vet-error`` when the model could not be vetted). Levels: critical/high -> error,
medium -> warning, low/info -> note; vicious -> error, inconclusive -> warning,
honest -> note. The location is the model file (a path relative to the working directory
when the model lies under it, else a ``file://`` URI).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["sarif_log", "sarif_json", "SARIF_VERSION", "SARIF_SCHEMA_URI", "LEVELS", "VERDICT_LEVELS"]

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
#: Finding severity -> SARIF result level.
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
#: Verdict -> SARIF result level.
VERDICT_LEVELS = {"vicious": "error", "inconclusive": "warning", "honest": "note"}
# GitHub code scanning ranks security alerts by this rule property (0.0 .. 10.0).
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.0", "low": "2.0", "info": "0.0"}
_VERDICT_SEVERITY = {"vicious": "9.0", "inconclusive": "5.0", "honest": "0.0"}
_VERDICT_TEXT = {
    "vicious": "The vet flagged the model as vicious: its outputs may encode the inputs it is run on.",
    "inconclusive": "The vet could not decide whether the model is honest (see the reasons).",
    "honest": "The vet found no sign that the model's outputs leak its inputs beyond the label.",
}
_INFO_URI = "https://github.com/edgeguard/edgeguard"


def sarif_log(
    reports: Iterable[Mapping[str, Any] | Any],
    *,
    errors: Iterable[tuple[str, str]] = (),
    version: str = "",
) -> dict[str, Any]:
    """A SARIF 2.1.0 log (a dict) of vet reports (``VetReport`` or its ``to_dict()``).

    ``errors`` are ``(model_path, message)`` pairs for models that could not be vetted at all.
    """
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for report in reports:
        data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        version = version or str(data.get("edgeguard_version", ""))
        location = _location(str(data.get("model_path", "")))
        for finding in data.get("findings", []):
            severity = str(finding.get("severity", "info"))
            code = str(finding.get("code", "finding"))
            rules.setdefault(code, _rule(code, code.replace("-", " "), LEVELS.get(severity, "note"), severity))
            text = str(finding.get("message", ""))
            if finding.get("fix"):
                text += f" Fix: {finding['fix']}"
            logical = str(finding.get("location", ""))
            results.append(
                _result(
                    code,
                    LEVELS.get(severity, "note"),
                    text,
                    location,
                    data,
                    logical if logical and logical != data.get("model_path") else "",
                    {"severity": severity},
                )
            )
        verdict = str(data.get("verdict", "inconclusive"))
        rule_id = f"verdict/{verdict}"
        if rule_id not in rules:
            rules[rule_id] = _rule(rule_id, _VERDICT_TEXT.get(verdict, verdict), VERDICT_LEVELS.get(verdict, "warning"))
            rules[rule_id]["properties"]["security-severity"] = _VERDICT_SEVERITY.get(verdict, "5.0")
        reasons = "; ".join(str(r) for r in data.get("reasons", []))
        likelihood = data.get("likelihood")
        text = f"edgeguard vet verdict: {verdict}" + (
            f" (likelihood of being vicious {likelihood:.3f})" if isinstance(likelihood, (int, float)) else ""
        )
        level = VERDICT_LEVELS.get(verdict, "warning")
        if data.get("exit_code") == 2:  # a critical finding: the file was refused
            level = "error"
        properties = {"verdict": verdict, "exit_code": data.get("exit_code"), "likelihood": likelihood}
        results.append(
            _result(rule_id, level, text + (f". {reasons}" if reasons else ""), location, data, "", properties)
        )
    for model_path, message in errors:
        rules.setdefault("vet-error", _rule("vet-error", "The model could not be vetted.", "error", "high"))
        results.append(
            _result(
                "vet-error",
                "error",
                f"edgeguard vet could not vet this model: {message}",
                _location(model_path),
                {"model_path": model_path},
                "",
                {"exit_code": 2},
            )
        )
    ordered = sorted(rules)
    index = {rule_id: i for i, rule_id in enumerate(ordered)}
    for result in results:
        result["ruleIndex"] = index[result["ruleId"]]
    driver: dict[str, Any] = {"name": "edgeguard", "informationUri": _INFO_URI, "rules": [rules[r] for r in ordered]}
    if version:
        driver["version"] = version
        driver["semanticVersion"] = version
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": SARIF_VERSION,
        "runs": [{"tool": {"driver": driver}, "results": results, "columnKind": "unicodeCodePoints"}],
    }


def sarif_json(reports: Iterable[Mapping[str, Any] | Any], **options: Any) -> str:
    """:func:`sarif_log` as indented JSON text."""
    return json.dumps(sarif_log(reports, **options), indent=2, allow_nan=False) + "\n"


def _rule(rule_id: str, description: str, level: str, severity: str | None = None) -> dict[str, Any]:
    text = description[:1].upper() + description[1:]
    rule: dict[str, Any] = {
        "id": rule_id,
        "name": "".join(part.capitalize() for part in rule_id.replace("/", "-").split("-")),
        "shortDescription": {"text": text},
        "defaultConfiguration": {"level": level},
        "properties": {"tags": ["security", "edgeguard"]},
    }
    if severity is not None:
        rule["properties"]["security-severity"] = _SECURITY_SEVERITY.get(severity, "0.0")
    return rule


def _result(
    rule_id: str,
    level: str,
    text: str,
    location: dict[str, Any],
    data: Mapping[str, Any],
    logical: str,
    properties: dict[str, Any],
) -> dict[str, Any]:
    where: dict[str, Any] = {"physicalLocation": location}
    if logical:
        where["logicalLocations"] = [{"name": logical}]
    sha = str(data.get("model_sha256", ""))
    fingerprint = hashlib.sha256(f"{sha}|{rule_id}|{logical}|{data.get('model_path', '')}".encode()).hexdigest()
    result: dict[str, Any] = {
        "ruleId": rule_id,
        "level": level,
        "message": {"text": text},
        "locations": [where],
        "partialFingerprints": {"edgeguardFinding/v1": fingerprint},
        "properties": {k: v for k, v in properties.items() if v is not None},
    }
    if sha:
        result["properties"]["model_sha256"] = sha
    return result


def _location(model_path: str) -> dict[str, Any]:
    path = Path(model_path)
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve())
        artifact = {"uri": relative.as_posix(), "uriBaseId": "%SRCROOT%"}
    except (ValueError, OSError):
        artifact = {"uri": path.resolve().as_uri()}
    if os.sep != "/" and "uri" in artifact:  # pragma: no cover - windows
        artifact["uri"] = artifact["uri"].replace(os.sep, "/")
    return {"artifactLocation": artifact, "region": {"startLine": 1}}
