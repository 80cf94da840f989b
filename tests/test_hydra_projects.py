"""What real Hydra projects' grids do (audiocraft, demucs), run unchanged by adora (issue 13).

One generated project covers: dotted grid names in a grids sub-package
(``adora grid compression.encodec_base``), grids importing a sibling module of
the grids package, an Explorer with ``get_grid_meta``/``get_grid_metrics`` and
``process_sheep``, an explorer that reads another XP with
``main.get_xp_from_sig``, ``main.dora.dir`` changed after decoration, and the
Slurm defaults of the ``slurm:`` section.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import typing as tp
from pathlib import Path

import pytest

try:
    from tests.conftest import adora_cli
except ImportError:  # tests/ is not a package
    from conftest import adora_cli  # type: ignore[no-redef]

FILES = {
    "hp/__init__.py": "",
    "hp/train.py": """
        from pathlib import Path
        from adora import hydra_main

        @hydra_main(config_path="conf", config_name="config", version_base="1.1")
        def main(cfg):
            pass

        # As audiocraft does: the output folder is decided after decoration.
        main.dora.dir = Path("moved_outputs").resolve()
    """,
    "hp/conf/config.yaml": """
        defaults:
          - model: small
          - optional sched: null
          - _self_
        dora:
          dir: outputs
          exclude: [num_workers]
        slurm:
          gpus: 3
          partition: learnlab
          time: 120
        lr: 0.1
        seed: 0
        num_workers: 4
        steps: ${model.dim}
    """,
    "hp/conf/model/small.yaml": "dim: 16\nact: relu\n",
    "hp/conf/model/big.yaml": "dim: 64\nact: gelu\n",
    "hp/conf/sched/cosine.yaml": "warmup: 2\n",
    "hp/grids/__init__.py": "",
    "hp/grids/_common.py": """
        import treetable as tt
        from adora import Explorer

        BASE = {"num_workers": 8, "lr": 0.01}

        class CompressionExplorer(Explorer):
            def get_grid_meta(self):
                return [tt.leaf("index", align=">"), tt.leaf("name"), tt.leaf("state"),
                        tt.leaf("sig", align=">")]

            def get_grid_metrics(self):
                return [tt.leaf("dim")]

            def process_sheep(self, sheep, history):
                return {"dim": sheep.xp.cfg.model.dim}
    """,
    "hp/grids/compression/__init__.py": "",
    "hp/grids/compression/encodec_base.py": """
        from .._common import BASE, CompressionExplorer

        @CompressionExplorer
        def explorer(launcher):
            launcher.bind_(BASE)
            for model in ["small", "big"]:
                sub = launcher.bind({"model": model})
                sub()
                sub({"sched": "cosine", "seed": 1})
    """,
    "hp/grids/finetune.py": """
        from adora import Explorer
        from ..train import main

        SIG = open("base_sig.txt").read().strip()

        @Explorer
        def explorer(launcher):
            # Start from another grid's XP, as fine-tuning grids do.
            base = main.get_xp_from_sig(SIG)
            launcher(base.argv + ["lr=0.5"])
    """,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tp.Iterator[Path]:
    root = tmp_path_factory.mktemp("hydra_projects")
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())
    patch = pytest.MonkeyPatch()
    patch.chdir(root)
    patch.syspath_prepend(str(root))
    yield root
    patch.undo()
    for module in list(sys.modules):
        if module == "hp" or module.startswith("hp."):
            del sys.modules[module]


def test_slurm_defaults_and_moved_dir(project: Path) -> None:
    main = importlib.import_module("hp.train").main
    slurm = main.get_slurm_config()
    assert (slurm.gpus, slurm.partition, slurm.time) == (3, "learnlab", 120)
    assert main.dora.dir == project / "moved_outputs"
    xp = main.get_xp(["model=big"])
    assert xp.folder == project / "moved_outputs" / "xps" / xp.sig
    assert xp.delta == [["model", "big"]]  # steps (interpolated) is compared to model=big


def test_dotted_grid_sibling_imports_hooks_and_get_xp_from_sig(project: Path) -> None:
    main = importlib.import_module("hp.train").main
    proc = adora_cli("-P", "hp", "grid", "compression.encodec_base", "--dry-run", "--init",
                     "--backend", "local", cwd=project, timeout=300)
    assert proc.returncode == 0, proc.stderr
    sigs = {main.get_xp(argv).sig: argv for argv in (
        ["num_workers=8", "lr=0.01", "model=small"],
        ["num_workers=8", "lr=0.01", "model=big"],
        ["num_workers=8", "lr=0.01", "model=big", "sched=cosine", "seed=1"])}
    out = proc.stdout
    for sig in sigs:
        assert sig in out  # get_grid_meta's sig column
        assert (project / "moved_outputs" / "xps" / sig / ".argv.json").exists()
    # process_sheep's metric: each XP's model.dim.
    assert "64" in out and "16" in out
    # A dry run with --init writes the 4 XP folders (no grid links, as Dora).
    assert len(list((project / "moved_outputs" / "xps").iterdir())) == 4

    base_sig = next(iter(sigs))
    (project / "base_sig.txt").write_text(base_sig)
    proc = adora_cli("-P", "hp", "grid", "finetune", "--dry-run", "--backend", "local",
                     cwd=project, timeout=300)
    assert proc.returncode == 0, proc.stderr
    tuned = main.get_xp(sigs[base_sig] + ["lr=0.5"])
    assert tuned.sig in proc.stdout or "lr=0.5" in proc.stdout
    assert "1 XPs" in proc.stdout or "1 XP" in proc.stdout
