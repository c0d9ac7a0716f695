"""The README's library snippet runs as written (and registers: Dice up, no folding)."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_snippet_runs_as_written():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    out = subprocess.run([sys.executable, "-c", blocks[0]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    nums = [float(v) for v in re.findall(r"(?:before|after|folding) ([0-9.e-]+)", out.stdout)]
    before, after, folding = nums
    assert after > before + 0.05 and folding < 1e-3
