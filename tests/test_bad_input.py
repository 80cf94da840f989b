"""Hostile inputs (issue #11, "nothing lost"): each ends in a clear adora error with its
exit status, never a raw traceback, and nothing is submitted twice or lost; one XP's
odd metrics never break the table of its grid."""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
import typing as tp
from pathlib import Path

import anyio
import pytest

from adora import cli
from adora.engine.grids import load_explorer
from adora.engine.run import run_grid
from adora.engine.watch import MIN_INTERVAL, GridWatch, check_interval
from adora.errors import (
    AdoraError,
    ConfigError,
    GridError,
    GridInterruptedError,
    MetricsError,
    OutputError,
    RecordError,
)
from adora.link import Link
from adora.package import load_main
from adora.testing.fake_backend import FakeBackend

try:
    from tests.conftest import adora_cli
except ImportError:  # tests/ is not a package
    from conftest import adora_cli  # type: ignore[no-redef]

ARGV = ["--epochs=1", "--lr=0.1"]


def refused(proc: subprocess.CompletedProcess[str], *words: str, code: int) -> str:
    """Assert an adora error naming ``words`` with exit status ``code``, no traceback."""
    assert proc.returncode == code, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("adora: error:"), proc.stderr
    for word in words:
        assert word in proc.stderr, f"{word!r} not in:\n{proc.stderr}"
    return proc.stderr


def write_grid(root: Path, name: str, body: str) -> Path:
    path = root / "toy" / "grids" / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def one(toy_project: Path) -> Path:
    """Grid ``one`` of one XP (ARGV); returns that XP's folder (not created)."""
    write_grid(toy_project, "one", """
        from adora import Explorer

        @Explorer
        def explorer(launcher):
            launcher(epochs=1, lr=0.1)
    """)
    return load_main("toy").get_xp(ARGV).folder


def submissions(root: Path) -> list[str]:
    """Every submission adora recorded (current and retired), and every local job."""
    out = root / "outputs" / ".adora"
    found = [p.name for p in (out / "submissions").rglob("*.json")] if out.is_dir() else []
    jobs = out / "local" / "jobs"
    return found + ([p.name for p in jobs.iterdir()] if jobs.is_dir() else [])


def grid_api(name: str, backend: FakeBackend) -> tp.Any:
    main = load_main("toy")
    explorer, path = load_explorer(main, name)
    return anyio.run(lambda: run_grid(main, explorer, name, backend=backend, grid_file=path))


# -- 1. an output folder adora cannot write ------------------------------------------------
def test_outputs_is_a_file(toy_project: Path, one: Path) -> None:
    (toy_project / "outputs").write_text("not a folder")
    for args in (["grid", "one"], ["run", "--", *ARGV]):
        refused(adora_cli(*args, cwd=toy_project), f"{toy_project / 'outputs'} is a file",
                "Move it out of the way", code=1)
    assert (toy_project / "outputs").read_text() == "not a folder"
    with pytest.raises(OutputError):
        grid_api("one", FakeBackend())


def _can_mount() -> bool:
    if not shutil.which("unshare") or sys.platform != "linux":
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def adora_in_tmpfs(root: Path, options: str, setup: str, *args: str, after: str = ""
                   ) -> subprocess.CompletedProcess[str]:
    """``python -m adora ARGS`` with ``outputs`` a tmpfs mounted with ``options`` (in a
    mount namespace of its own: the mount disappears with the command); ``after`` runs
    next, in the same namespace; the exit status is adora's."""
    (root / "outputs").mkdir(exist_ok=True)
    command = " ".join([sys.executable, "-m", "adora", *args])
    script = (f"mount -t tmpfs -o {options} tmpfs outputs || exit 99; {setup} {command}; "
              f"rc=$?; {after} exit $rc")
    env = {k: v for k, v in os.environ.items() if k not in ("ADORA_PACKAGE", "DORA_PACKAGE")}
    env["ADORA_BACKEND"] = "local"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not _can_mount(), reason="needs unshare -m and mount (root, Linux)")
def test_read_only_outputs_folder(toy_project: Path, one: Path) -> None:
    # chmod 0o555 does not stop root: a read-only tmpfs does.
    proc = adora_in_tmpfs(toy_project, "ro", "", "grid", "one")
    refused(proc, "outputs/.adora", "Read-only file system", "writable output folder", code=1)


# -- 2. an XP folder that is a file, or a dangling link --------------------------------------
@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_xp_folder_is_a_file_or_dangling_link(toy_project: Path, one: Path, kind: str) -> None:
    one.parent.mkdir(parents=True)
    if kind == "file":
        one.write_text("in the way")
        words = [f"The XP folder {one} is a file", "Move it out of the way"]
    else:
        one.symlink_to(toy_project / "gone")
        words = [f"The XP folder {one} is a link to {toy_project / 'gone'}, which does not "
                 "exist", "Create the folder it points to, or delete the link"]
    for args in (["grid", "one"], ["run", "--", *ARGV]):
        stderr = refused(adora_cli(*args, cwd=toy_project), *words, code=1)
        assert "submission(s) failed" not in stderr  # the backend was never asked
    assert submissions(toy_project) == []
    assert os.path.islink(one) if kind != "file" else one.read_text() == "in the way"
    backend = FakeBackend()
    with pytest.raises(OutputError, match="The XP folder"):
        grid_api("one", backend)
    assert len(backend.jobs) == 0


# -- 3. the lock is a folder ------------------------------------------------------------------
def test_lock_is_a_directory(toy_project: Path, one: Path) -> None:
    lock = toy_project / "outputs" / ".adora" / "lock"
    lock.mkdir(parents=True)
    refused(adora_cli("grid", "one", cwd=toy_project),
            f"adora's lock file {lock} is a folder", f"rm -r {lock}", code=1)
    assert submissions(toy_project) == [] and lock.is_dir()
    with pytest.raises(OutputError, match="is a folder"):
        grid_api("one", FakeBackend())


# -- 4. garbage .argv.json ----------------------------------------------------------------
@pytest.mark.parametrize("content", ["{garbage", '{"lr": 0.1}', "[1, 2]"])
def test_garbage_argv_json(toy_project: Path, one: Path, content: str) -> None:
    one.mkdir(parents=True)
    (one / ".argv.json").write_text(content)
    sig = one.name
    for args in (["run", "-f", sig], ["export", sig]):
        refused(adora_cli(*args, cwd=toy_project), f"The arguments of XP {sig}",
                str(one / ".argv.json"), "unreadable", "--init", code=1)
    with pytest.raises(RecordError):
        load_main("toy").get_xp_from_sig(sig)
    # Submitting the XP from its grid writes a good one again.
    backend = FakeBackend()
    grid_api("one", backend)
    assert json.loads((one / ".argv.json").read_text()) == ARGV and len(backend.jobs) == 1


# -- 5. an unknown final state in a job record --------------------------------------------------
def test_unknown_final_state(toy_project: Path, one: Path) -> None:
    one.mkdir(parents=True)
    (one / ".argv.json").write_text(json.dumps(ARGV))
    record = {"backend": "local", "token": "abc", "job_id": "7", "final_state": "EXPLODED"}
    (one / "adora_job.json").write_text(json.dumps(record))
    for args in (["grid", "one"], ["grid", "one", "--json"], ["info", "--", *ARGV]):
        refused(adora_cli(*args, cwd=toy_project), str(one / "adora_job.json"),
                "'EXPLODED' is not a", "unreadable", code=1)
    assert submissions(toy_project) == []  # never resubmitted behind the user's back
    backend = FakeBackend()
    with pytest.raises(RecordError, match="EXPLODED"):
        grid_api("one", backend)
    assert len(backend.jobs) == 0


# -- 6. wrong types in clusters.toml and [tool.adora] -----------------------------------------
@pytest.mark.parametrize("text, words", [
    ('[clusters.c1]\nhost = "h"\nworkdir = "/w"\nport = "twenty-two"\n',
     ["`port` must be an integer from 1 to 65535", "'twenty-two'"]),
    ('[clusters.c1]\nhost = 3\nworkdir = "/w"\n', ["`host` must be a string", "integer 3"]),
    ('[clusters.c1]\nhost = "h"\nworkdir = "/w"\nactivate = [1]\n',
     ["`activate` must be a string or an array of strings"]),
    ('[clusters.c1]\nhost = "h"\nworkdir = "/w"\nrate = "fast"\n',
     ["`rate` must be a positive number"]),
    ("clusters = 3\n", ["`clusters` must be a table", "integer (3)"]),
    ("[clusters]\nc1 = 3\n", ["`clusters.c1` must be a table"]),
])
def test_clusters_toml_wrong_types(toy_project: Path, text: str, words: list[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = toy_project / "clusters.toml"
    path.write_text(text)
    env = {"ADORA_CLUSTERS_FILE": str(path), "ADORA_BACKEND": "auto"}
    refused(adora_cli("cluster", "check", "c1", cwd=toy_project, env=env), *words,
            str(path.name), code=2)
    refused(adora_cli("grid", "sweep", "--cluster", "c1", cwd=toy_project, env=env), *words,
            code=2)
    assert submissions(toy_project) == []
    from adora.clusters import load_cluster

    monkeypatch.setenv("ADORA_CLUSTERS_FILE", str(path))
    with pytest.raises(ConfigError):
        load_cluster("c1")


@pytest.mark.parametrize("text, words", [
    ("[tool]\nadora = 3\n", ["`tool.adora` must be a table"]),
    ("[tool.adora]\nclusters = [1, 2]\n", ["`tool.adora.clusters` must be a table", "array"]),
    ("[tool.adora.clusters]\nc1 = 'x'\n", ["`tool.adora.clusters.c1` must be a table"]),
    ("[tool.adora.clusters.c1]\nhost = 'h'\nworkdir = 'w'\nmax_sessions = true\n",
     ["`max_sessions` must be a positive integer", "boolean True"]),
])
def test_tool_adora_wrong_types(toy_project: Path, text: str, words: list[str]) -> None:
    (toy_project / "pyproject.toml").write_text(text)
    env = {"ADORA_CLUSTERS_FILE": str(toy_project / "none.toml")}
    refused(adora_cli("cluster", "check", "c1", cwd=toy_project, env=env), *words,
            "pyproject.toml", code=2)
    if "c1" not in text:
        refused(adora_cli("cluster", "list", cwd=toy_project, env=env), *words, code=2)


# -- 7. watch intervals -------------------------------------------------------------------
def test_watch_interval_negative_refused_zero_clamped(toy_project: Path) -> None:
    write_grid(toy_project, "slow", """
        from adora import Explorer

        @Explorer
        def explorer(launcher):
            launcher(epochs=3, epoch_time=0.7, lr=0.3)
    """)
    for value in ("-1", "nan", "inf"):
        refused(adora_cli("grid", "slow", "--watch", "-i", value, cwd=toy_project),
                "-i/--interval", "0 or more", code=2)
    assert submissions(toy_project) == []  # refused before anything was done

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = adora_cli("grid", "slow", "--watch", "-i", "0", cwd=toy_project)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr
    assert "1 COMPLETED" in proc.stdout
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert wall > 2 and cpu < 0.5 * wall, (cpu, wall)  # it spun at ~90% before

    assert check_interval(0) == MIN_INTERVAL and check_interval(5.0) == 5.0
    with pytest.raises(ConfigError):
        check_interval(-1)
    watch = GridWatch.__new__(GridWatch)
    with pytest.raises(ConfigError):
        anyio.run(lambda: watch.run(lambda w: None, interval=-1))


# -- 8. the grid exits or is interrupted ---------------------------------------------------
def test_grid_calls_sys_exit(toy_project: Path) -> None:
    path = write_grid(toy_project, "bye", """
        import sys
        from adora import Explorer

        @Explorer
        def explorer(launcher):
            launcher(lr=0.3)
            sys.exit(3)
    """)
    refused(adora_cli("grid", "bye", cwd=toy_project), f"{path}:8:", "sys.exit(3)", code=2)
    assert submissions(toy_project) == [] and not (toy_project / "outputs" / "xps").exists()
    with pytest.raises(GridError, match=r"sys\.exit\(3\)") as info:
        grid_api("bye", FakeBackend())
    assert info.value.filename == str(path) and info.value.lineno == 8


def test_grid_raises_keyboard_interrupt(toy_project: Path) -> None:
    path = write_grid(toy_project, "ki", """
        from adora import Explorer

        @Explorer
        def explorer(launcher):
            launcher(lr=0.3)
            raise KeyboardInterrupt
    """)
    refused(adora_cli("grid", "ki", cwd=toy_project), f"{path}:7:",
            "interrupted while evaluating the grid", "nothing was submitted", code=130)
    assert submissions(toy_project) == [] and not (toy_project / "outputs" / "xps").exists()
    backend = FakeBackend()
    with pytest.raises(GridInterruptedError):
        grid_api("ki", backend)
    assert len(backend.jobs) == 0
    # At import time too.
    write_grid(toy_project, "ki2", "raise KeyboardInterrupt\n")
    refused(adora_cli("grid", "ki2", cwd=toy_project), "interrupted while importing the grid",
            code=130)


# -- 10. OSError reaching the CLI ---------------------------------------------------------
def _in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        cli.main(args)
    code = stop.value.code
    return code if isinstance(code, int) else 1, capsys.readouterr().err


def test_disk_full_reaching_the_cli(toy_project: Path, one: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import adora.engine.run as engine_run

    target = toy_project / "outputs" / ".adora" / "submissions" / "x.json"

    def full(*args: tp.Any, **kwargs: tp.Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    monkeypatch.setattr(engine_run, "save_submission", full)
    monkeypatch.setenv("ADORA_BACKEND", "local")
    code, err = _in_process(["grid", "one"], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"adora: error: file system error on {target}: No space left on "
                          "device. The disk is full")
    assert submissions(toy_project) == []

    # A bug stays a bug: its traceback is kept.
    def bug(*args: tp.Any, **kwargs: tp.Any) -> None:
        raise RuntimeError("a bug")
    monkeypatch.setattr(engine_run, "save_submission", bug)
    with pytest.raises(BaseException) as info:
        cli.main(["grid", "one"])
    assert "a bug" in repr(info.value) or any(
        "a bug" in str(e) for e in getattr(info.value, "exceptions", []))


def test_training_code_os_error_keeps_its_traceback(toy_project: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import adora.run

    def training(main: tp.Any, argv: tp.Any) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "data.csv")
    monkeypatch.setattr(adora.run, "run_xp", training)
    monkeypatch.setattr(cli, "_user_code_running", False)
    with pytest.raises(FileNotFoundError):
        cli.main(["run", "--", *ARGV])


@pytest.mark.skipif(not _can_mount(), reason="needs unshare -m and mount (root, Linux)")
def test_real_disk_full(toy_project: Path, one: Path) -> None:
    proc = adora_in_tmpfs(toy_project, "size=16k",
                          "head -c 100000 /dev/zero > outputs/fill 2>/dev/null;",
                          "grid", "one")
    refused(proc, "file system error on", "outputs/.adora/lock.holder",
            "No space left on device", "The disk is full", code=1)
    # With a little room left, the first write that does not fit fails, and leaves no
    # temporary file behind.
    proc = adora_in_tmpfs(toy_project, "size=16k", "head -c 12288 /dev/zero > outputs/fill;",
                          "grid", "one", after="find outputs -name '*.tmp' -o -name '*.json';")
    refused(proc, "No space left on device", code=1)
    assert ".tmp" not in proc.stdout and "submissions" not in proc.stdout


# -- 11. --clear through a symlinked XP folder -------------------------------------------------
def test_clear_follows_a_symlinked_xp_folder(toy_project: Path, one: Path, tmp_path: Path
                                             ) -> None:
    real = tmp_path / "scratch" / one.name
    real.mkdir(parents=True)
    (real / ".argv.json").write_text(json.dumps(ARGV))
    (real / "checkpoint.json").write_text("old checkpoint")
    (real / "history.jsonl").write_text('{"old": 1}\n' * 5)
    (real / "sub").mkdir()
    (real / "sub" / "old.txt").write_text("old")
    one.parent.mkdir(parents=True)
    one.symlink_to(real)
    proc = adora_cli("grid", "one", "--clear", "--yes", cwd=toy_project)
    assert proc.returncode == 0, proc.stderr
    assert "Cleared 1 XP folder(s)" in proc.stderr
    assert one.is_symlink() and os.path.realpath(one) == str(real)  # still on scratch
    assert not (real / "sub").exists()
    assert (real / "checkpoint.json").read_text() != "old checkpoint" \
        if (real / "checkpoint.json").exists() else True
    history = (real / "history.jsonl").read_text() if (real / "history.jsonl").exists() else ""
    assert '"old"' not in history
    assert len(submissions(toy_project)) >= 1


# -- 12. odd metrics never break the table --------------------------------------------------
def test_push_metrics_refuses_what_is_not_a_dict(tmp_path: Path) -> None:
    link = Link(tmp_path / "history.json")
    link.push_metrics({"loss": 1.0})
    for bad in ([1, 2, 3], 0.5, "loss"):
        with pytest.raises(MetricsError, match="push_metrics takes a dict"):
            link.push_metrics(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):  # what code catching TypeError expects
            link.push_metrics(bad)  # type: ignore[arg-type]
    with pytest.raises(MetricsError):
        link.update_history([{"loss": 1.0}, [1]])  # type: ignore[list-item]
    assert (tmp_path / "history.jsonl").read_text() == '{"loss": 1.0}\n'
    assert link.history == [{"loss": 1.0}]


BAD_LINES = {
    0.1: '[1, 2, 3]\n{"valid": {"loss": 0.5}}\n',              # not a dict: skipped
    0.2: '{"valid": {"loss": %s}}\n' % (10 ** 400),           # OverflowError under .4f
    0.3: '{"valid": {"loss": "abc"}}\n',                      # ValueError under .4f
    0.4: '{"valid": {"loss": NaN}}\n',
    0.5: '{"valid": {"loss": -Infinity}}\n',
    0.6: '{"valid": {"loss": 0.25}}\n',
}


def _metrics_grid(root: Path, hook: str = "") -> None:
    write_grid(root, "met", f"""
        import treetable as tt
        from adora import Explorer

        class MyExplorer(Explorer):
            def get_grid_metrics(self):
                return [tt.group("valid", [tt.leaf("loss", ".4f")]), tt.leaf("epoch")]
            {hook}

        @MyExplorer
        def explorer(launcher):
            for lr in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]:
                launcher(epochs=0, lr=lr)
    """)
    main = load_main("toy")
    for lr, lines in BAD_LINES.items():
        folder = main.get_xp(["--epochs=0", f"--lr={lr}"]).folder
        folder.mkdir(parents=True)
        (folder / "history.jsonl").write_text(lines)


def _rows(text: str) -> dict[str, str]:
    # Rows by name, without the bars between column groups.
    rows = [" ".join(t for t in line.split() if t != "|") for line in text.splitlines()]
    return {row.split()[1]: row for row in rows if row[:1].isdigit()}


def test_bad_metrics_show_as_marked_cells(toy_project: Path) -> None:
    _metrics_grid(toy_project)
    proc = adora_cli("grid", "met", cwd=toy_project)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = _rows(proc.stdout)
    assert rows["lr=0.1"].split()[-2:] == ["0.5000", "1"]  # the list line is skipped
    assert rows["lr=0.2"].split()[-2] == "!" and rows["lr=0.3"].split()[-2] == "!"
    assert rows["lr=0.4"].split()[-2] == "nan" and rows["lr=0.5"].split()[-2] == "-inf"
    assert rows["lr=0.6"].split()[-2] == "0.2500"
    assert proc.stdout.count("!: a value its column's format cannot show") == 1
    assert "1 history entry is not a dict of metrics (e.g. [1, 2, 3]), skipped" in proc.stdout

    proc = adora_cli("grid", "met", "--json", cwd=toy_project)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    loss = {row["name"]: row["metrics"].get("valid", {}).get("loss")
            for row in data["met"]}
    assert loss["lr=0.1"] == 0.5 and loss["lr=0.2"] == 10 ** 400 and loss["lr=0.3"] == "abc"
    assert loss["lr=0.4"] == "NaN" and loss["lr=0.5"] == "-Infinity"
    assert loss["lr=0.6"] == 0.25 and loss["lr=0.7"] is None


@pytest.mark.parametrize("hook", [
    "def process_history(self, history):\n"
    "                return {'valid': history[-1]['valid'], 'epoch': len(history)}",
    "def process_sheep(self, sheep, history):\n"
    "                return {'valid': history[-1]['valid'], 'epoch': len(history)}",
])
def test_hook_raising_on_empty_history(toy_project: Path, hook: str) -> None:
    _metrics_grid(toy_project, hook)
    name = hook.split("(")[0].split()[-1]
    proc = adora_cli("grid", "met", cwd=toy_project)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    rows = _rows(proc.stdout)
    assert rows["lr=0.7"].split()[-2:] == ["err", "err"]  # no history: the hook raised
    assert rows["lr=0.6"].split()[-2:] == ["0.2500", "1"]
    sig = load_main("toy").get_xp(["--epochs=0", "--lr=0.7"]).sig
    notes = [line for line in proc.stdout.splitlines() if line.startswith("err:")]
    assert len(notes) == 1, proc.stdout
    assert notes[0].startswith(f"err: #6 {sig}: MyExplorer.{name} raised IndexError: list "
                               "index out of range (")
    assert "met.py:" in notes[0]

    proc = adora_cli("grid", "met", "--json", cwd=toy_project)
    assert proc.returncode == 0, proc.stderr
    rows_json = {row["name"]: row for row in json.loads(proc.stdout)["met"]}
    assert "IndexError" in rows_json["lr=0.7"]["metrics_error"]
    assert rows_json["lr=0.7"]["metrics"] == {}
    assert "metrics_error" not in rows_json["lr=0.6"]
    assert not math.isnan(rows_json["lr=0.6"]["metrics"]["valid"]["loss"])


def test_errors_are_adora_errors() -> None:
    for cls in (OutputError, RecordError, MetricsError, GridInterruptedError):
        assert issubclass(cls, AdoraError)
    assert GridInterruptedError.exit_code == 130 and OutputError.exit_code == 1
