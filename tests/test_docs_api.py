"""The Python snippets of docs/api.md run as written, in order, on the sample data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    """The ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```\s*$", text, flags=re.DOTALL | re.MULTILINE)


def test_python_blocks_are_found() -> None:
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n"]


@pytest.mark.slow
def test_api_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The snippets read sample_rasters/ from the current folder and write beside it.
    (tmp_path / "sample_rasters").symlink_to(ROOT / "sample_rasters")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5
    namespace: dict = {"__name__": "__docs_api__"}
    for i, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOC.name} block {i}", "exec"), namespace)
    assert (tmp_path / "model_0_30.joblib").is_file()
