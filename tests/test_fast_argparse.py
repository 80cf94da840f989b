"""The fast path for grid argvs gives argparse's namespace, or declines."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

from adora.fast_argparse import FastParser

PARITY = Path(__file__).parent / "dora_parity"


def _parity_modules() -> tuple[object, object]:
    spec = importlib.util.spec_from_file_location("_adora_fast_cases", PARITY / "cases.py")
    assert spec is not None and spec.loader is not None
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    spec = importlib.util.spec_from_file_location(
        "_adora_fast_parser_def", PARITY / "argparse_project" / "aproj" / "parser_def.py")
    assert spec is not None and spec.loader is not None
    parser_def = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parser_def)
    return cases, parser_def


def _argparse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | None:
    try:
        return parser.parse_args(argv)
    except SystemExit:
        return None


def _grid_style(argv: list[str]) -> list[str]:
    # What launchers produce from dicts: "--k=v" for options with one value.
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and "=" not in token and i + 1 < len(argv) \
                and not argv[i + 1].startswith("-"):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
        else:
            out.append(token)
            i += 1
    return out


def test_same_namespace_as_argparse_on_the_dora_parity_cases(
        capsys: pytest.CaptureFixture[str]) -> None:
    cases, parser_def = _parity_modules()
    parser = parser_def.build_parser()  # type: ignore[attr-defined]
    fast = FastParser(parser)
    taken = 0
    argvs = cases.argparse_cases()  # type: ignore[attr-defined]
    for argv in argvs + [_grid_style(a) for a in argvs]:
        got = fast.parse(argv)
        if got is None:
            continue
        taken += 1
        assert got == _argparse(parser, argv), argv
    capsys.readouterr()  # argparse's error messages
    # The fast path must really have been exercised, on hundreds of argvs.
    assert taken >= 500


def test_get_default_matches_argparse_and_follows_changes() -> None:
    _, parser_def = _parity_modules()
    parser = parser_def.build_parser()  # type: ignore[attr-defined]
    fast = FastParser(parser)
    dests = {a.dest for a in parser._actions} | {"nothing"}
    assert {d: fast.get_default(d) for d in dests} == {d: parser.get_default(d) for d in dests}
    parser.set_defaults(lr=0.5, extra="x")
    parser.add_argument("--late", type=int, default=3)
    assert fast.get_default("lr") == 0.5 == parser.get_default("lr")
    assert fast.get_default("extra") == "x" and fast.get_default("late") == 3
    assert fast.parse(["--late=4"]) == parser.parse_args(["--late=4"])


@pytest.mark.parametrize("argv", [
    ["--lr"],                 # the value is the next token
    ["--lr=abc"],             # argparse reports the error
    ["--optim=rmsprop"],      # not a choice
    ["--l=0.1"],              # an abbreviation
    ["--amp=1"],              # a flag given a value
    ["--layers=2"],           # nargs: argparse's business
    ["-v"], ["--verbose"],    # count
    ["imagenet"],             # a positional
    ["--note="],              # an empty value
    ["--note=--"],            # argparse drops "--" values
    ["--", "x"],
    ["--help"],
])
def test_declines_what_argparse_must_handle(argv: list[str]) -> None:
    _, parser_def = _parity_modules()
    assert FastParser(parser_def.build_parser()).parse(argv) is None  # type: ignore[attr-defined]


def test_declines_parsers_it_cannot_mirror() -> None:
    required = argparse.ArgumentParser()
    required.add_argument("--lr", type=float, required=True)
    exclusive = argparse.ArgumentParser()
    group = exclusive.add_mutually_exclusive_group()
    group.add_argument("--a", type=int)
    group.add_argument("--b", type=int)
    custom = argparse.ArgumentParser()
    custom.add_argument("--flag", type=lambda s: s == "yes", default=False)
    fromfile = argparse.ArgumentParser(fromfile_prefix_chars="@")
    fromfile.add_argument("--lr", type=float, default=0.1)
    for parser, argv in [(required, ["--lr=0.1"]), (exclusive, ["--a=1", "--b=2"]),
                         (custom, ["--flag=yes"]), (fromfile, ["--lr=0.2"])]:
        assert FastParser(parser).parse(argv) is None
    assert sys.modules  # (keeps the import list honest for linters)
