"""Dora 0.1.13 behaviour that real projects and scripts rely on (issue #14)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.conftest import adora_cli


def write_grid(root: Path, name: str, body: str) -> None:
    (root / "toy" / "grids" / f"{name}.py").write_text(
        "from adora import Explorer\n\n" + textwrap.dedent(body))


def test_dry_run_init_writes_every_argv_and_submits_nothing(toy_project: Path) -> None:
    write_grid(toy_project, "ini", """
        @Explorer
        def explorer(launcher):
            for seed in (1, 2, 3):
                launcher(seed=seed, epochs=1)
    """)
    out = adora_cli("grid", "ini", "--dry-run", "--init", "--json", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["ini"]
    xps = toy_project / "outputs" / "xps"
    for row in rows:
        assert json.loads((xps / row["sig"] / ".argv.json").read_text()) == row["argv"]
        assert row["state"] is None
    assert "Initialised 3 XP folder(s)" in out.stderr
    assert not (toy_project / "outputs" / ".adora" / "local" / "queue.db").exists()
    assert not (toy_project / "outputs" / ".adora" / "submissions").exists()
    # What --init is for: -f SIG on an XP that was never launched.
    info = adora_cli("info", "-f", rows[1]["sig"], cwd=toy_project)
    assert info.returncode == 0 and "seed=2" in info.stdout, info.stderr
    # A plain dry run still writes nothing.
    write_grid(toy_project, "dry", """
        @Explorer
        def explorer(launcher):
            launcher(seed=9, epochs=1)
    """)
    assert adora_cli("grid", "dry", "--dry-run", cwd=toy_project).returncode == 0
    assert len(list(xps.iterdir())) == 3


def test_the_grid_folder_exists_while_the_explorer_runs(toy_project: Path) -> None:
    # Explorers that list their grid's folder (audiocraft's evaluation grids do).
    write_grid(toy_project, "lister", """
        import os
        from toy.train import main

        @Explorer
        def explorer(launcher):
            folder = main.dora.dir / "grids" / "lister"
            for seed, _ in enumerate(sorted(os.listdir(folder)) + ["new"]):
                launcher(seed=seed, epochs=1)
    """)
    out = adora_cli("grid", "lister", "--dry-run", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    assert (toy_project / "outputs" / "grids" / "lister").is_dir()


def test_options_abbreviated_as_dora_scripts_write_them(toy_project: Path) -> None:
    write_grid(toy_project, "ab", """
        @Explorer
        def explorer(launcher):
            launcher(seed=1, epochs=1)
    """)
    # Dora's argparse takes unique prefixes, in Dora's own spelling (with `_`).
    out = adora_cli("grid", "ab", "--dry_run", "--init", "--no_monitor", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    assert "Initialised 1 XP folder(s)" in out.stderr
    short = adora_cli("grid", "ab", "--dry", "--no_git", "--dev", cwd=toy_project)
    assert short.returncode == 0, short.stderr
    assert "Submitted" not in short.stderr
    ambiguous = adora_cli("grid", "ab", "--d", cwd=toy_project)
    assert ambiguous.returncode == 2
    assert "Ambiguous option --d: it could be --dev, --dry-run" in ambiguous.stderr
    # Training arguments after `--` are never expanded.
    run = adora_cli("run", "--", "--dry", cwd=toy_project)
    assert run.returncode == 2 and "unrecognized arguments: --dry" in run.stderr


def test_expand_abbreviations_unit() -> None:
    from adora.cli import expand_abbreviations

    class P:
        def __init__(self, name: str, *opts: str) -> None:
            self.name, self.opts, self.secondary_opts = name, list(opts), []

    params = [P("dry_run", "--dry-run", "--dry_run"), P("dev", "--dev"),
              P("interval", "-i", "--interval"), P("no_monitoring", "--no-monitoring")]
    assert expand_abbreviations(params, ["--dry", "--inter=2", "--no_mon", "x", "--",
                                         "--dry"]) == [
        "--dry-run", "--interval=2", "--no-monitoring", "x", "--", "--dry"]
    assert expand_abbreviations(params, ["--unknown", "-i", "3"]) == ["--unknown", "-i", "3"]
    import pytest

    with pytest.raises(ValueError, match="--dev, --dry-run"):
        expand_abbreviations(params, ["--d"])


#: The public names of Dora 0.1.13's modules (recorded from dora-search 0.1.13), minus the
#: CLI's internals (``*_action``, ``dora.info``/``dora.launch``, argparse helpers), Dora's
#: ``Shepherd`` (adora schedules whole grids: `adora.run_grid`) and ``dora.tests``.
DORA_PUBLIC = {
    "conf": ["DoraConfig", "ShepConfig", "SlurmConfig", "SubmitRules", "update_from_args",
             "update_from_hydra"],
    "distrib": ["DistribSpec", "get_distrib_spec", "init", "is_master", "rank",
                "set_distrib_env", "world_size"],
    "executor": ["ChildrenManager", "start_ddp_workers"],
    "explore": ["Explorer", "Herd", "Launcher", "ProcessException"],
    "git_save": ["CommandError", "assign_clone", "check_repo_clean", "enter_clone",
                 "get_git_commit", "get_git_root", "get_new_clone", "run_command",
                 "shallow_clone", "to_absolute_path"],
    "hydra": ["HydraMain", "hydra_main"],
    "link": ["Link"],
    "log": ["LogProgress", "bold", "disable_logging", "fatal", "red", "setup_logging",
            "simple_log"],
    "main": ["ArgparseMain", "DecoratedMain", "argparse_main", "get_module_name"],
    "names": ["NamesMixin"],
    "share": ["dump", "load"],
    "shep": ["Sheep", "no_log", "register_preemption_callaback"],
    "utils": ["import_or_fatal", "jsonable", "reliable_rmtree", "try_load", "write_and_rename"],
    "xp": ["XP", "get_xp", "is_xp"],
    "": ["Explorer", "Launcher", "Link", "Sheep", "XP", "argparse_main", "get_xp", "hydra_main",
         "is_xp", "to_absolute_path"],
}


def test_dora_public_modules_exist_under_adora() -> None:
    import importlib

    import adora

    missing = []
    for module, names in DORA_PUBLIC.items():
        mod = importlib.import_module("adora" + (f".{module}" if module else ""))
        missing += [f"{module}.{name}" for name in names if not hasattr(mod, name)]
        if module:
            assert getattr(adora, module) is mod  # `import dora; dora.utils` works too
    assert missing == []


def test_utils_write_and_rename_and_try_load(tmp_path: Path) -> None:
    import pickle

    import pytest

    from adora.utils import reliable_rmtree, try_load, write_and_rename

    target = tmp_path / "checkpoint.pkl"
    with write_and_rename(target) as f:
        pickle.dump({"epoch": 3}, f)
    assert try_load(target) == {"epoch": 3}
    assert not (tmp_path / "checkpoint.pkl.tmp").exists()
    # A write that fails leaves the old checkpoint whole and no temporary file.
    with pytest.raises(RuntimeError):
        with write_and_rename(target) as f:
            f.write(b"half")
            raise RuntimeError("killed")
    assert try_load(target) == {"epoch": 3} and not (tmp_path / "checkpoint.pkl.tmp").exists()
    (tmp_path / "broken.pkl").write_bytes(b"\x80garbage")
    assert try_load(tmp_path / "broken.pkl") is None
    assert try_load(tmp_path / "missing.pkl") is None
    folder = tmp_path / "xp"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f").write_text("x")
    reliable_rmtree(folder)
    assert not folder.exists()


def test_errors_dora_users_catch(toy_project: Path) -> None:
    # Dora raised AttributeError for an unknown Slurm field and AssertionError for a Slurm
    # change inside job_array(): grid code that catches those still works.
    write_grid(toy_project, "catching", """
        @Explorer
        def explorer(launcher):
            try:
                launcher.slurm_(not_a_field=1)
            except AttributeError:
                pass
            with launcher.job_array():
                launcher(seed=1, epochs=1)
                try:
                    launcher.slurm(gpus=4)(seed=2, epochs=1)
                except AssertionError:
                    launcher(seed=3, epochs=1)
    """)
    out = adora_cli("grid", "catching", "--dry-run", "--json", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["catching"]) == 2
    # Uncaught, they are adora's clear errors with the grid's line.
    write_grid(toy_project, "typo", """
        @Explorer
        def explorer(launcher):
            launcher.slurm_(gpu=1)
            launcher(seed=1)
    """)
    bad = adora_cli("grid", "typo", "--dry-run", cwd=toy_project)
    assert bad.returncode == 2 and "Unknown SlurmConfig field 'gpu'" in bad.stderr
    assert "typo.py:6" in bad.stderr and "Traceback" not in bad.stderr


def _git_project(root: Path) -> Path:
    import subprocess

    pkg = root / "gsp"
    (pkg / "grids").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "grids" / "__init__.py").write_text("")
    # The training function lives in one module, the decorated main in another (the main
    # module the user names with --main_module), as some projects split them.
    (pkg / "impl.py").write_text(textwrap.dedent("""
        import argparse
        from adora import get_xp

        parser = argparse.ArgumentParser()
        parser.add_argument("--x", type=int, default=0)

        def train():
            xp = get_xp()
            print("git_save", xp.dora.git_save, "code", (xp.folder / "code").exists())
    """))
    (pkg / "other_train.py").write_text(textwrap.dedent("""
        from adora import argparse_main
        from .impl import parser, train

        main = argparse_main(parser=parser, dir="./outputs", git_save=True)(train)
    """))
    (root / ".gitignore").write_text("outputs/\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=a@b", "-c", "user.name=n", "commit", "-qm", "i"]):
        subprocess.run(cmd, cwd=root, check=True)
    return root


def test_run_git_save_follows_the_command_and_the_users_main_module(tmp_path: Path) -> None:
    root = _git_project(tmp_path / "proj")
    # Without --git_save, this process runs with git_save off, whatever the decorator says.
    plain = adora_cli("-P", "gsp", "--main_module", "other_train", "run", "--", "--x", "1",
                      cwd=root)
    assert plain.returncode == 0, plain.stderr
    assert "git_save False code False" in plain.stdout
    # With it, the run starts again from the snapshot with the user's own -P/--main_module
    # (the decorated main is defined in other_train, its function in impl).
    saved = adora_cli("-P", "gsp", "--main_module", "other_train", "run", "--git_save", "--",
                      "--x", "2", cwd=root)
    assert saved.returncode == 0, saved.stderr
    assert "git_save True code True" in saved.stdout


def test_every_slurm_setting_is_honoured_or_refused() -> None:
    import dataclasses

    from adora.conf import SlurmConfig
    from adora.slurm.params import check_supported, submitit_parameters
    from adora.slurm.script import RemoteJob, sbatch_script

    # Not sbatch options: submitit's executor takes python and max_num_timeout, the SSH
    # backend puts python in the job's command line (RemoteJob.python); dependents
    # makes a chain of jobs (tests/test_dependents.py, tests/test_slurm_dependents.py).
    not_in_submitit = {"python", "max_num_timeout", "dependents"}
    not_in_script = {"python", "dependents"}
    changed = {"gpus": 16, "mem_per_gpu": 7, "time": 30, "cpus_per_gpu": 3, "cpus_per_task": 5,
               "partition": "p", "comment": "c", "setup": ["module load x"],
               "constraint": "volta", "one_task_per_node": True, "array_parallelism": 3,
               "exclude": "n1", "qos": "q", "account": "a", "container_chdir": True,
               "force_chdir": True, "srun_args": ["--x"], "nodelist": ["n1", "n2"],
               "max_num_timeout": 3, "python": "/opt/py", "dependents": 2}
    job = RemoteJob(job_name="j", count=4, array=True, log_pattern="/w/%A_%a.log",
                    argv_file="/w/argv.json", code_dir="/c", original_dir="/w",
                    package="toy", main_module="train")
    base_config = SlurmConfig(gpus=8)  # several tasks: one_task_per_node changes them
    base = submitit_parameters(base_config, job_name="j", cwd="/w")
    base_script = sbatch_script(job, base_config)
    for field in dataclasses.fields(SlurmConfig):
        assert field.name in changed, f"SlurmConfig.{field.name}: honoured or refused?"
        config = dataclasses.replace(base_config, **{field.name: changed[field.name]})
        check_supported(config)
        if field.name not in not_in_submitit:
            assert submitit_parameters(config, job_name="j", cwd="/w") != base, field.name
        if field.name not in not_in_script:
            assert sbatch_script(job, config) != base_script, field.name


def test_bad_dependents_are_refused_before_anything_is_submitted(toy_project: Path) -> None:
    import anyio
    import pytest

    from adora.api import load_explorer, load_main
    from adora.engine.run import run_grid
    from adora.errors import ConfigError

    write_grid(toy_project, "dep", """
        @Explorer
        def explorer(launcher):
            launcher.slurm_(dependents=-1)
            launcher(seed=1)
    """)
    main = load_main("toy")
    explorer = load_explorer(main, "dep")
    with pytest.raises(ConfigError, match="dependents must be an integer >= 0"):
        anyio.run(lambda: run_grid(main, explorer, "dep", backend="slurm"))
    assert not (toy_project / "outputs" / ".adora" / "submissions").exists()
    assert not (toy_project / "outputs" / "xps").exists()
