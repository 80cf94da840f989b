"""Hydra mains (examples/hydra_toy): Dora's delta rules, dora:/slurm: sections, adora run."""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import subprocess
import sys
import textwrap
import typing as tp
from pathlib import Path

import pytest

try:
    from tests.conftest import EXAMPLES, adora_cli
except ImportError:  # tests/ is not a package
    from conftest import EXAMPLES, adora_cli  # type: ignore[no-redef]

from adora import ArgumentsError, ConfigError, is_xp

EMPTY_SIG = "97d170e1"


def dora_sig(delta: list) -> str:
    return hashlib.sha1(json.dumps(sorted(delta)).encode()).hexdigest()[:8]


def _forget(prefix: str) -> None:
    for name in list(sys.modules):
        if name == prefix or name.startswith(prefix + "."):
            del sys.modules[name]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tp.Iterator[Path]:
    """A copy of examples/hydra_toy, the working directory for the whole module."""
    root = tmp_path_factory.mktemp("hydra") / "hydra_toy"
    shutil.copytree(EXAMPLES / "hydra_toy", root,
                    ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    patch = pytest.MonkeyPatch()
    patch.chdir(root)
    patch.syspath_prepend(str(root))
    for var in ("ADORA_PACKAGE", "DORA_PACKAGE", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        patch.delenv(var, raising=False)
    _forget("htoy")
    yield root
    patch.undo()
    _forget("htoy")


@pytest.fixture(scope="module")
def main(project: Path) -> tp.Any:
    return importlib.import_module("htoy.train").main


def delta(main: tp.Any, *argv: str) -> list:
    return main.get_xp(list(argv)).delta


# -- signatures and deltas --------------------------------------------------------------------

def test_defaults(main: tp.Any) -> None:
    xp = main.get_xp([])
    assert xp.delta == [] and xp.sig == EMPTY_SIG
    assert xp.cfg.optim.lr == 0.05 and xp.cfg.model.hidden == 4


def test_nested_leaves(main: tp.Any) -> None:
    xp = main.get_xp(["optim.lr=0.1"])
    assert xp.delta == [["optim.lr", 0.1]]
    assert xp.sig == dora_sig([["optim.lr", 0.1]])
    assert xp.cfg.optim.lr == 0.1
    # A leaf set to its default is not in the delta.
    assert delta(main, "optim.lr=0.05", "data.seed=42") == []
    # Keys in sorted order whatever the order of the overrides; last override wins.
    assert delta(main, "optim.lr=0.1", "data.seed=1") == [["data.seed", 1], ["optim.lr", 0.1]]
    a = main.get_xp(["data.seed=1", "optim.lr=0.2", "optim.lr=0.1"])
    assert a.argv == ["data.seed=1", "optim.lr=0.1"]
    assert a.sig == main.get_xp(["optim.lr=0.1", "data.seed=1"]).sig


def test_group_overrides(main: tp.Any) -> None:
    # Dora's quirk: choosing the default group option still changes the signature.
    assert delta(main, "model=small") == [["model", "small"]]
    assert main.get_xp(["model=small"]).sig == "b4454024"  # verified with Dora 0.1.13
    big = main.get_xp(["model=big"])
    assert big.delta == [["model", "big"]]  # compared to model=big, not to the defaults
    assert big.cfg.model.hidden == 16
    assert delta(main, "model=big", "model.hidden=32") == [["model", "big"], ["model.hidden", 32]]
    # Same config as model=big, but reached through a leaf: another XP.
    same_cfg = main.get_xp(["model.hidden=16"])
    assert same_cfg.delta == [["model.hidden", 16]] and same_cfg.sig != big.sig
    assert delta(main, "model=big", "model=small") == [["model", "small"]]


def test_new_keys_with_plus(main: tp.Any) -> None:
    assert delta(main, "+tag=relu") == [["tag", "relu"]]
    # A new nested key enters as a whole, as in Dora.
    assert delta(main, "+extra.key=hello") == [["extra", {"key": "hello"}]]
    with pytest.raises(ArgumentsError, match="tag"):
        main.get_xp(["tag=relu"])  # not in the config: Hydra needs the +


def test_dict_and_list_values(main: tp.Any) -> None:
    argv = main.value_to_argv({"model": "big", "optim.lr": 0.1, "model.activation": "relu",
                               "+layers": [1, 2, 3], "+opt2": {"a": 1, "b": "x, y"}})
    assert argv == ["model=big", "optim.lr=0.1", 'model.activation="relu"',
                    "+layers=[1, 2, 3]", '+opt2={a: 1, b: "x, y"}']
    xp = main.get_xp(argv)
    assert xp.delta == [["model", "big"], ["model.activation", "relu"], ["optim.lr", 0.1],
                        ["layers", [1, 2, 3]], ["opt2", {"a": 1, "b": "x, y"}]]
    assert xp.sig == dora_sig(xp.delta)
    assert xp.cfg.opt2.b == "x, y"
    assert main.value_to_argv(["a=1", ({"b": None},)]) == ["a=1", "b=null"]


def test_dora_and_slurm_keys_are_excluded(main: tp.Any) -> None:
    assert delta(main, "slurm.gpus=4", "dora.dir=elsewhere", "+dora.git_save=true") == []
    assert main.get_xp(["slurm.time=10"]).sig == EMPTY_SIG
    # and the example's own exclusions
    assert delta(main, "num_workers=4", "epoch_time=1.5", "optim.lr=0.1") == [["optim.lr", 0.1]]


def test_invalid_overrides(main: tp.Any) -> None:
    with pytest.raises(ArgumentsError, match="key=value"):
        main.get_xp(["optim.lr"])
    with pytest.raises(ArgumentsError, match="model"):
        main.get_xp(["model=huge"])


# -- dora: and slurm: sections ----------------------------------------------------------------

def test_dora_and_slurm_sections(main: tp.Any, project: Path) -> None:
    assert main.dora.dir == project / "outputs"
    assert main.dora.dir.is_absolute()
    assert main.dora.exclude == ["num_workers", "epoch_time", "dora.*", "slurm.*"]
    slurm = main.get_slurm_config()
    assert (slurm.gpus, slurm.time, slurm.cpus_per_task) == (0, 60, 1)
    assert slurm.mem_per_gpu == 40  # untouched fields keep their defaults
    assert (main.package, main.main_module, main.name) == ("htoy", "train", "htoy")
    assert main._slow


def _hydra_main_with(tmp_path: Path, config: str) -> tp.Any:
    from adora.hydra import HydraMain

    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "config.yaml").write_text(textwrap.dedent(config))

    def train(cfg: tp.Any) -> None:
        pass

    return HydraMain(train, config_name="config", config_path=str(conf), version_base="1.1")


@pytest.mark.parametrize("section", ["dora", "slurm"])
def test_unknown_key_in_sections_is_a_config_error(tmp_path: Path, section: str) -> None:
    config = f"""
        x: 1
        {section}:
          bogus_key: 3
    """
    with pytest.raises(ConfigError, match="bogus_key") as info:
        hydra_main = _hydra_main_with(tmp_path, config)
        hydra_main.get_slurm_config()
    assert "Known fields" in str(info.value)


def test_no_dora_section_gives_defaults(tmp_path: Path) -> None:
    hydra_main = _hydra_main_with(tmp_path, "x: 1\n")
    assert hydra_main.dora.exclude == ["dora.*", "slurm.*"]
    assert hydra_main.dora.dir == Path.cwd() / "outputs"
    assert hydra_main.get_slurm_config().gpus == 1
    assert hydra_main.get_xp(["x=2"]).delta == [["x", 2]]


# -- running ----------------------------------------------------------------------------------

def test_adora_run_writes_into_the_xp_folder(main: tp.Any, project: Path) -> None:
    argv = ["optim.lr=0.1", "model=big", "optim.epochs=2"]
    proc = adora_cli("run", "--", *argv, cwd=project)
    assert proc.returncode == 0, proc.stderr
    xp = main.get_xp(argv)
    folder = project / "outputs" / "xps" / xp.sig
    # Hydra's run directory is the XP folder: its files land there, nowhere else.
    assert (folder / ".hydra" / "config.yaml").exists()
    assert "epoch 2/2" in (folder / "train.log").read_text()
    assert sorted(p.name for p in (project / "outputs").iterdir()) == ["xps"]
    lines = (folder / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert json.loads((folder / ".argv.json").read_text()) == argv

    out = adora_cli("info", "-m", "--", "optim.epochs=2", "model=big", "optim.lr=0.10",
                    cwd=project)
    assert out.returncode == 0, out.stderr
    assert f"sig: {xp.sig}" in out.stdout
    assert "name: model=big opt.epochs=2 opt.lr=0.1" in out.stdout
    assert f"Metrics[2]: {json.dumps(json.loads(lines[-1]))}" in out.stdout

    # Running it again resumes from the history (loaded although Hydra changed directory).
    again = adora_cli("run", "--", *argv, "num_workers=3", cwd=project)
    assert again.returncode == 0, again.stderr
    assert f"Resuming {xp.sig} at epoch 2" in (folder / "train.log").read_text()
    assert (folder / "history.jsonl").read_text().splitlines() == lines


def test_multirun_is_not_an_xp(main: tp.Any, project: Path) -> None:
    assert not main._is_active(["-m", "optim.lr=0.1,0.2"])
    assert not main._is_active(["--multirun", "optim.lr=0.1"])
    assert main._is_active(["optim.lr=0.1"])
    # adora run needs one XP: a clear error, not a sweep.
    proc = adora_cli("run", "--", "-m", "optim.lr=0.1,0.2", cwd=project)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "-m" in proc.stderr


MULTIRUN_TRAIN = textwrap.dedent("""
    from pathlib import Path
    from hydra.utils import get_original_cwd
    from adora import hydra_main, is_xp

    @hydra_main(config_path="config", config_name="config", version_base="1.1")
    def main(cfg):
        Path(get_original_cwd(), f"marker_{cfg.x}").write_text(str(is_xp()))
""")


def test_multirun_runs_plain_hydra(tmp_path: Path) -> None:
    (tmp_path / "mr" / "config").mkdir(parents=True)
    (tmp_path / "mr" / "__init__.py").write_text("")
    (tmp_path / "mr" / "train.py").write_text(MULTIRUN_TRAIN)
    (tmp_path / "mr" / "config" / "config.yaml").write_text("x: 0\n")
    code = ("import sys; sys.argv = ['train', '-m', 'x=1,2']; "
            "from mr.train import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Both jobs of the sweep ran, outside of any XP, in Hydra's own multirun folders.
    assert (tmp_path / "marker_1").read_text() == "False"
    assert (tmp_path / "marker_2").read_text() == "False"
    assert not (tmp_path / "outputs").exists()
    assert (tmp_path / "multirun").is_dir()
    assert not is_xp()
