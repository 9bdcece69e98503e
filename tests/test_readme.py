"""The README's Python code blocks run as written, against a real classifier file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_blocks_and_setup_commands():
    text = README.read_text(encoding="utf-8")
    assert BLOCKS, "the README lost its code examples"
    assert "apt-get install -y dataset-fashion-mnist" in text
    assert "pip install torch==2.13.0 && pip install -e" in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    test_command = re.search(r"&& (python -m pytest[^\n`]*)\n", text).group(1).strip()
    assert ci.rstrip().endswith(test_command), "CI must run exactly the README's test command"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(index, tiny_threats, tmp_path, monkeypatch):
    shutil.copy(tiny_threats["vicious"]["classifier"], tmp_path / "classifier.onnx")
    shutil.copy(tiny_threats["vicious"]["decoder"], tmp_path / "decoder.onnx")
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {"__name__": "__readme__"})
