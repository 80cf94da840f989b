"""Command-line conventions (issue #12): version, completion, colours, errors that point to
where the bad value came from, a typed package."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import adora_cli


def test_version() -> None:
    import adora

    out = adora_cli("--version", cwd=Path.cwd())
    assert out.returncode == 0 and out.stdout.strip() == f"adora {adora.__version__}"


def test_bash_completion_of_grid_names_and_signatures(toy_project: Path) -> None:
    def complete(words: str, cword: int) -> list[str]:
        env = {**os.environ, "_ADORA_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(cword)}
        out = subprocess.run([sys.executable, "-m", "adora"], cwd=toy_project, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("adora grid sw", 2) == ["sweep"]
    assert complete("adora -P toy grid ", 4) == ["sweep"]
    assert adora_cli("run", "--", "--epochs", "1", cwd=toy_project).returncode == 0
    sigs = os.listdir(toy_project / "outputs" / "xps")
    assert complete("adora info -f ", 3) == sorted(sigs)
    # The completion scripts themselves.
    shown = adora_cli("--show-completion", "bash", cwd=toy_project)
    assert shown.returncode == 0 and "_ADORA_COMPLETE=complete_bash" in shown.stdout


def test_errors_name_the_variable_or_flag_that_gave_the_value(toy_project: Path) -> None:
    env = adora_cli("grid", "sweep", env={"ADORA_BACKEND": "bogus"}, cwd=toy_project)
    assert env.returncode == 2 and "ADORA_BACKEND=bogus" in env.stderr
    assert "--backend" not in env.stderr.split(":")[2]
    flag = adora_cli("grid", "sweep", "--backend", "bogus", cwd=toy_project)
    assert flag.returncode == 2 and "--backend bogus" in flag.stderr
    cluster = adora_cli("grid", "sweep", env={"ADORA_CLUSTER": "nowhere",
                                              "ADORA_BACKEND": "auto"}, cwd=toy_project)
    assert cluster.returncode == 2 and "ADORA_CLUSTER=nowhere" in cluster.stderr
    assert not (toy_project / "outputs" / "xps").exists()


def test_training_argument_errors_point_to_the_training_help(toy_project: Path) -> None:
    bad = adora_cli("run", "--", "--lrr", "1", cwd=toy_project)
    assert bad.returncode == 2 and "adora run -- --help" in bad.stderr
    helped = adora_cli("run", "--", "--help", cwd=toy_project)
    assert helped.returncode == 0 and "--epochs" in helped.stdout


def _stderr_on_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> bytes:
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "adora", *args], cwd=cwd,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks)


def test_no_color_is_honoured(toy_project: Path) -> None:
    args = ["grid", "nope"]
    coloured = _stderr_on_a_terminal(args, toy_project, {"ADORA_BACKEND": "local"})
    assert b"\x1b[" in coloured and b"No grid named" in coloured
    plain = _stderr_on_a_terminal(args, toy_project, {"ADORA_BACKEND": "local",
                                                      "NO_COLOR": "1"})
    assert b"\x1b[" not in plain and b"No grid named" in plain


def test_typed_package_for_user_scripts(tmp_path: Path) -> None:
    import zipfile

    import adora

    # The wheel ships py.typed (what makes type checkers read an installed package).
    repo = Path(adora.__file__).resolve().parent.parent
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                            str(repo)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("adora-*.whl"))
    assert "adora/py.typed" in zipfile.ZipFile(wheel).namelist()
    # A user script calling the API gets real types under mypy --strict (the editable
    # install of the checkout is found through MYPYPATH; errors inside imported modules are
    # silenced, as for an installed package).
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent("""
        import adora
        from adora import Explorer, GridResult, RunGridArgs

        async def go(main: adora.DecoratedMain, explorer: Explorer) -> list[str]:
            result = await adora.run_grid(main, explorer, "sweep",
                                          args=RunGridArgs(dry_run=True), backend="local")
            reveal_type(result)
            kept: GridResult = result
            return [sheep.xp.sig for sheep in kept.sheeps]
    """))
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                          "--cache-dir", str(tmp_path / "cache"), str(script)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "MYPYPATH": str(repo)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'Revealed type is "adora.engine.run.GridResult"' in out.stdout


def test_an_unreachable_cluster_is_an_error_not_stale_states(toy_project: Path,
                                                             tmp_path: Path) -> None:
    import json

    clusters = tmp_path / "clusters.toml"
    clusters.write_text(textwrap.dedent(f"""
        [clusters.down]
        host = "127.0.0.1"
        port = 1
        workdir = "{tmp_path / 'remote'}"
        connect_timeout = 5
    """))
    env = {"ADORA_CLUSTERS_FILE": str(clusters), "ADORA_BACKEND": "auto"}
    init = adora_cli("grid", "sweep", "--dry-run", "--init", "--json", cwd=toy_project,
                     env=env)
    assert init.returncode == 0, init.stderr
    sigs = [row["sig"] for row in json.loads(init.stdout)["sweep"]]
    # The grid was submitted to that cluster earlier (its submission record says so).
    submissions = toy_project / "outputs" / ".adora" / "submissions"
    submissions.mkdir(parents=True)
    (submissions / "tok.json").write_text(json.dumps({
        "backend": "ssh:down", "token": "tok", "job_name": "adora_tok", "slurm": None,
        "records": [{"sig": sig, "job_id": str(100 + i), "submitted_at": 1.0}
                    for i, sig in enumerate(sigs)]}))
    out = adora_cli("grid", "sweep", "--cluster", "down", cwd=toy_project, env=env,
                    timeout=120)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "cluster down" in out.stderr and "Could not get job states" in out.stderr
    assert "Traceback" not in out.stderr and "Submitted" not in out.stderr
    assert "RUN" not in out.stdout and "PEN" not in out.stdout  # nothing shown as fresh


def test_dry_run_prints_the_plan(toy_project: Path) -> None:
    out = adora_cli("grid", "sweep", "--dry-run", cwd=toy_project)
    assert out.returncode == 0, out.stderr
    assert "Would submit 5 XP(s), new: lr=0.01 hidden=4 (be3b5fba)" in out.stderr
    assert "Dry run: nothing was submitted or cancelled." in out.stderr
    assert not (toy_project / "outputs" / "xps").exists()
