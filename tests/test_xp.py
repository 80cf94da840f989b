"""XPs: Dora-identical signatures, folders, the current-XP context, collisions, names."""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from adora import (
    ArgumentsError,
    SignatureCollisionError,
    XPNotFoundError,
    argparse_main,
    get_xp,
    is_xp,
)
from adora.main import ArgparseMain
from adora.xp import XP, get_sig

EMPTY_SIG = "97d170e1"
# Two toy seeds whose deltas [["seed", N]] share a signature (found by a birthday search).
COLLIDING_SEEDS = (74759, 77789)
COLLIDING_SIG = "3eb933f3"


def dora_sig(delta: list) -> str:
    """Dora 0.1.13's formula, written independently of adora."""
    return hashlib.sha1(json.dumps(sorted(delta)).encode()).hexdigest()[:8]


@pytest.fixture
def toy(toy_project: Path) -> ArgparseMain:
    from toy.train import main

    return main


# -- signatures -------------------------------------------------------------------------------

def test_empty_delta_signature(toy: ArgparseMain) -> None:
    xp = toy.get_xp([])
    assert xp.delta == []
    assert xp.sig == EMPTY_SIG == dora_sig([]) == get_sig([])


def test_known_dora_signatures(toy: ArgparseMain) -> None:
    # Verified with Dora 0.1.13: seed=1 gives 6c3a68e5 in every project.
    assert toy.get_xp(["--seed=1"]).sig == "6c3a68e5"
    xp = toy.get_xp(["--lr=0.1", "--hidden=4"])
    assert xp.delta == [["lr", 0.1], ["hidden", 4]]
    assert xp.sig == dora_sig([["lr", 0.1], ["hidden", 4]])


def test_signature_ignores_order_spelling_and_repeats(toy: ArgparseMain) -> None:
    ref = toy.get_xp(["--lr=0.1", "--hidden=4"]).sig
    for argv in (["--hidden=4", "--lr=0.1"],
                 ["--lr", "0.1", "--hidden", "4"],
                 ["--lr=0.10", "--hidden=04"],
                 ["--lr=1e-1", "--hidden=4"],
                 ["--lr=0.5", "--hidden=4", "--lr=0.1"]):
        assert toy.get_xp(argv).sig == ref, argv
    assert toy.get_xp(["--lr=0.2", "--hidden=4"]).sig != ref


def test_values_equal_to_defaults_are_not_in_the_delta(toy: ArgparseMain) -> None:
    xp = toy.get_xp(["--lr=0.05", "--hidden=8", "--activation=tanh"])
    assert xp.delta == []
    assert xp.sig == EMPTY_SIG
    assert xp.argv == ["--lr=0.05", "--hidden=8", "--activation=tanh"]


def test_excluded_arguments(toy: ArgparseMain) -> None:
    # The toy excludes num_workers and epoch_time (argparse dest names).
    xp = toy.get_xp(["--num_workers=8", "--epoch_time=2"])
    assert xp.delta == []
    assert xp.sig == EMPTY_SIG
    assert xp.argv == ["--num_workers=8", "--epoch_time=2"]  # still run with them
    assert xp.cfg.num_workers == 8
    assert toy.get_xp(["--lr=0.1", "--num_workers=3"]).sig == toy.get_xp(["--lr=0.1"]).sig
    assert toy.dora.is_excluded("num_workers") and not toy.dora.is_excluded("lr")


def test_folder_layout_and_argv_cache(toy: ArgparseMain, toy_project: Path) -> None:
    xp = toy.get_xp(["--lr", "0.1"])
    assert toy.dora.dir == toy_project / "outputs"
    assert xp.folder == toy_project / "outputs" / "xps" / xp.sig
    assert xp.history == xp.folder / "history.json"
    assert not xp.folder.exists()
    assert toy.init_xp(xp) is xp
    assert json.loads((xp.folder / ".argv.json").read_text()) == ["--lr", "0.1"]
    assert sorted(p.name for p in xp.folder.iterdir()) == [".argv.json"]
    assert xp.link.history_file == xp.folder / "history.json"


# -- the current XP ---------------------------------------------------------------------------

def test_get_xp_outside_of_an_xp_raises() -> None:
    assert not is_xp()
    with pytest.raises(RuntimeError, match="Not in a xp"):
        get_xp()


def test_enter_makes_get_xp_return_the_xp(toy: ArgparseMain) -> None:
    xp = toy.get_xp(["--lr=0.1"])
    other = toy.get_xp(["--lr=0.2"])
    with xp.enter():
        assert is_xp()
        assert get_xp() is xp
        with pytest.raises(RuntimeError):
            with other.enter():
                pass
        with other.enter(stack=True):
            assert get_xp() is other
        assert get_xp() is xp
    assert not is_xp()
    with pytest.raises(ValueError):  # the context is left even on errors
        with xp.enter():
            raise ValueError
    assert not is_xp()


def test_main_runs_inside_its_xp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=int, default=0)
    seen = []

    @argparse_main(parser=parser, dir=tmp_path / "out")
    def main():
        xp = get_xp()
        seen.append((xp.sig, xp.cfg.x, list(xp.link.history)))
        xp.link.push_metrics({"x": xp.cfg.x})
        return "done"

    monkeypatch.setattr(sys, "argv", ["train", "--x=3"])
    assert main() == "done"
    assert main() == "done"
    sig = dora_sig([["x", 3]])
    # The second run sees the history of the first: it is loaded before main starts.
    assert seen == [(sig, 3, []), (sig, 3, [{"x": 3}])]
    assert json.loads((tmp_path / "out" / "xps" / sig / ".argv.json").read_text()) == ["--x=3"]
    assert not is_xp()


def test_xp_equality(toy: ArgparseMain) -> None:
    a = toy.get_xp(["--lr=0.1"])
    b = toy.get_xp(["--lr=0.1"])
    assert a.link is not b.link
    assert a == b  # the link does not take part
    a.link.history.append({"x": 1})
    assert a == b
    assert a != toy.get_xp(["--lr=0.2"])
    # Same signature but another argv: a different XP object, the same folder.
    c = toy.get_xp(["--lr", "0.1"])
    assert c.sig == a.sig and c != a


def test_xp_needs_a_delta_or_a_sig(toy: ArgparseMain) -> None:
    with pytest.raises(ValueError):
        XP(dora=toy.dora, cfg=None, argv=[])
    xp = XP(dora=toy.dora, cfg=None, argv=[], sig="abcdef12")
    assert xp.folder.name == "abcdef12"


# -- from signatures --------------------------------------------------------------------------

def test_get_xp_from_sig(toy: ArgparseMain) -> None:
    xp = toy.init_xp(toy.get_xp(["--lr=0.1", "--num_workers=2"]))
    assert toy.get_argv_from_sig(xp.sig) == ["--lr=0.1", "--num_workers=2"]
    again = toy.get_xp_from_sig(xp.sig)
    assert again == xp
    assert again.cfg.num_workers == 2


def test_unknown_sig_is_xp_not_found(toy: ArgparseMain) -> None:
    for call in (toy.get_argv_from_sig, toy.get_xp_from_sig):
        with pytest.raises(XPNotFoundError, match="deadbeef") as info:
            call("deadbeef")
        assert isinstance(info.value, RuntimeError)  # what Dora raised
        assert info.value.sig == "deadbeef"


def test_shared_folder(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=int, default=0)

    @argparse_main(parser=parser, dir=tmp_path / "out", shared=tmp_path / "team")
    def main():
        pass

    xp = main.init_xp(main.get_xp(["--x=5"]))
    shared = tmp_path / "team" / "xps" / xp.sig / ".argv.json"
    assert xp._shared_argv_cache == shared
    assert json.loads(shared.read_text()) == ["--x=5"]
    assert (shared.parent.stat().st_mode & 0o777) == 0o777  # writable by the whole team
    assert (shared.stat().st_mode & 0o777) == 0o777
    # Another user (no local folder) finds the XP through the shared folder.
    (xp.folder / ".argv.json").unlink()
    assert main.get_argv_from_sig(xp.sig) == ["--x=5"]
    assert main.get_xp_from_sig(xp.sig) == xp


# -- signature collisions ---------------------------------------------------------------------

def test_colliding_seeds_really_collide(toy: ArgparseMain) -> None:
    a, b = (toy.get_xp([f"--seed={seed}"]) for seed in COLLIDING_SEEDS)
    assert a.sig == b.sig == COLLIDING_SIG
    assert a.delta != b.delta


def test_signature_collision_is_refused(toy: ArgparseMain) -> None:
    first, second = COLLIDING_SEEDS
    folder = toy.dora.dir / "xps" / COLLIDING_SIG
    folder.mkdir(parents=True)
    # The folder belongs to seed=first, written by hand (or by Dora, which merges silently).
    (folder / ".argv.json").write_text(json.dumps([f"--seed={first}"]))
    (folder / "history.jsonl").write_text('{"loss": 1.0}\n')
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    xp = toy.get_xp([f"--seed={second}"])
    assert xp.folder == folder
    with pytest.raises(SignatureCollisionError) as info:
        toy.init_xp(xp)
    message = str(info.value)
    assert COLLIDING_SIG in message
    assert str(first) in message and str(second) in message
    assert "collision" in message.lower()
    assert info.value.sig == COLLIDING_SIG
    # Nothing was touched.
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    # The owner of the folder itself is welcome, with any spelling of its arguments.
    toy.init_xp(toy.get_xp(["--seed", str(first), "--num_workers=4"]))
    assert json.loads((folder / ".argv.json").read_text()) == ["--seed", str(first),
                                                                "--num_workers=4"]


# -- names ------------------------------------------------------------------------------------

def test_short_name_part(toy: ArgparseMain) -> None:
    assert toy.short_name_part("lr", 0.1) == "lr=0.1"
    assert toy.short_name_part("optim.lr", 0.1) == "opt.lr=0.1"
    assert toy.short_name_part("model.encoder.depth", 3) == "mod.enc.depth=3"
    assert toy.short_name_part("augment", True) == "augment"
    assert toy.short_name_part("augment", False) == "augment=False"
    assert toy.short_name_part("data", Path("/datasets/imagenet/train")) == "data=train"


def test_get_name_and_get_names(toy: ArgparseMain) -> None:
    xps = [toy.get_xp(argv) for argv in (["--lr=0.1", "--hidden=4"],
                                         ["--lr=0.2", "--hidden=4"],
                                         ["--lr=0.2", "--hidden=4", "--activation=relu"])]
    assert toy.get_name(xps[0]) == "lr=0.1 hidden=4"
    assert toy.get_name(toy.get_xp([])) == ""
    names, base = toy.get_names(xps)
    assert base == "hidden=4"
    assert names == ["lr=0.1", "lr=0.2", "lr=0.2 activation=relu"]
    assert list(toy.get_name_parts(xps[2]).items()) == [("lr", 0.2), ("hidden", 4),
                                                         ("activation", "relu")]
    with pytest.raises(ValueError):
        toy.get_names([])


def test_names_of_flags(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--data", type=Path, default=Path("/data/small"))

    @argparse_main(parser=parser, dir=tmp_path)
    def main():
        pass

    xp = main.get_xp(["--augment", "--data=/data/big"])
    assert xp.delta == [["augment", True], ["data", "/data/big"]]  # Path made jsonable
    assert main.get_name(xp) == "augment data=/data/big"
    assert main.value_to_argv({"augment": True, "data": "/x"}) == ["--augment", "--data=/x"]


# -- pickling and argument errors -------------------------------------------------------------

def test_decorated_main_pickles_by_import_path(toy: ArgparseMain, toy_project: Path) -> None:
    data = pickle.dumps(toy)
    assert pickle.loads(data) is toy
    assert b"toy.train.main" in data
    assert b"MLP" not in data  # no code or state of the module travels
    # A fresh interpreter (a job on another node) re-imports the module to unpickle it.
    code = ("import pickle, sys; main = pickle.loads(sys.stdin.buffer.read()); "
            "print(type(main).__name__, main.package, main.main_module, main.dora.dir)")
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                         cwd=toy_project, check=True).stdout.decode()
    assert out.split() == ["ArgparseMain", "toy", "train", str(toy_project / "outputs")]


def test_arguments_error_names_the_argument(toy: ArgparseMain) -> None:
    with pytest.raises(ArgumentsError, match="--bogus") as info:
        toy.get_xp(["--lr=0.1", "--bogus=3"])
    assert info.value.argv == ["--lr=0.1", "--bogus=3"]
    with pytest.raises(ArgumentsError, match="--lr") as info:
        toy.get_xp(["--lr=fast"])
    assert "fast" in str(info.value)
    with pytest.raises(ArgumentsError, match="activation"):
        toy.get_xp(["--activation=sigmoid"])
    # The parser is left as it was: argparse's own error handling is back.
    assert "error" not in vars(toy.parser)
    assert toy.get_xp(["--lr=0.1"]).sig == dora_sig([["lr", 0.1]])


def test_value_to_argv(toy: ArgparseMain) -> None:
    assert toy.value_to_argv({"lr": 0.1, "hidden": 4}) == ["--lr=0.1", "--hidden=4"]
    assert toy.value_to_argv(["--a", ("--b", {"c": 1})]) == ["--a", "--b", "--c=1"]
    with pytest.raises(ValueError):
        toy.value_to_argv(3)
