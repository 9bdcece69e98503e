"""benchmarks/readme_tables.py: README figures are generated from benchmarks/results/NAME_readme.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "benchmarks" / "readme_tables.py"


def tables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def readme(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "latency_readme.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    (results / "detection_readme.md").write_text("AUC 0.9 against the adaptive attacker\n")
    path = tmp_path / "README.md"
    path.write_text(
        "# Title\n\n<!-- edgeguard:begin latency -->\nold table\n<!-- edgeguard:end latency -->\n\ntext\n"
        "<!-- edgeguard:begin detection --><!-- edgeguard:end detection -->\nend\n"
    )
    return path, results


def test_check_fails_then_generate_then_check_passes(readme):
    path, results = readme
    before = path.read_text()
    stale = tables("--readme", str(path), "--results", str(results), "--check")
    assert stale.returncode == 1 and "out of date" in stale.stderr and "-old table" in stale.stderr
    assert path.read_text() == before  # --check changes nothing
    assert tables("--readme", str(path), "--results", str(results)).returncode == 0
    text = path.read_text()
    assert "| 1 | 2 |" in text and "old table" not in text and "AUC 0.9" in text
    assert text.startswith("# Title\n\n<!-- edgeguard:begin latency -->\n") and text.endswith("\nend\n")
    assert tables("--readme", str(path), "--results", str(results), "--check").returncode == 0
    assert tables("--readme", str(path), "--results", str(results)).returncode == 0 and path.read_text() == text
    (results / "latency_readme.md").write_text("| a | b |\n|---|---|\n| 1 | 3 |\n")  # a new benchmark run
    assert tables("--readme", str(path), "--results", str(results), "--check").returncode == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- edgeguard:begin latency -->\nx\n", "edgeguard:end latency"),
        ("<!-- edgeguard:end latency -->\n", "edgeguard:begin latency"),
        ("<!-- edgeguard:begin nope -->\n<!-- edgeguard:end nope -->\n", "nope_readme.md"),
    ],
    ids=["no-end", "no-begin", "no-fragment"],
)
def test_broken_markers_exit_2(readme, text, message):
    path, results = readme
    path.write_text(text)
    result = tables("--readme", str(path), "--results", str(results), "--check")
    assert result.returncode == 2 and message in result.stderr


def test_the_real_readme_is_in_sync():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    if not re.search(r"<!-- edgeguard:begin [A-Za-z0-9_.-]+ -->", text):
        pytest.skip("README.md has no <!-- edgeguard:begin NAME --> markers yet: nothing is generated")
    result = tables("--check")
    assert result.returncode == 0, result.stderr + "\nrun: python benchmarks/readme_tables.py"
