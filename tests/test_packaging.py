"""The built wheel maps metrics/ and baselines/ into the adabench namespace, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_namespaced_packages(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("adabench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "adabench/metrics/base.py" in names and "adabench/baselines/ff_anchor.py" in names
    assert not any(n.startswith(("metrics/", "baselines/")) for n in names)
    assert any(n.startswith("adabench/world/suites/") and n.endswith(".txt") for n in names)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import importlib.util, adabench.metrics.base, adabench.baselines.ff_anchor, adabench.world.suites;"
            "import adabench.cli, adabench.training.recipe as r; assert 'base' in r.recipe_names();"
            "assert adabench.cli.main(['list']) == 0;"
            "assert importlib.util.find_spec('metrics') is None and importlib.util.find_spec('baselines') is None;"
            "print(adabench.metrics.base.__file__)")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
                         cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1].startswith(str(target))
