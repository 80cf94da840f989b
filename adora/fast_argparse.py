"""A fast path for parsing the argument lists grids generate, equal to argparse's result.

Every XP of a grid is parsed with the training package's parser, as Dora does,
to compute its signature: about 40 µs an XP, the largest part of evaluating a
large grid. Grids generate simple tokens, ``--name=value`` for options that
store one value and ``--flag`` for flags, which need none of argparse's
general machinery. `FastParser` handles exactly those, on parsers where
nothing else could change the outcome, and gives up (returns None) on
anything else: the caller then runs argparse, which also produces the error
message for bad arguments. Its result is the namespace argparse would return;
the Dora-parity tests check both paths on recorded cases.
"""

from __future__ import annotations

import argparse
import typing as tp
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["FastParser", "parser_errors"]

#: Conversions known to be pure (a user's ``type`` function may have side effects).
_PURE_TYPES: tuple[tp.Any, ...] = (None, str, int, float)
_CONST_ACTIONS = (argparse._StoreConstAction, argparse._StoreTrueAction,
                  argparse._StoreFalseAction)


@dataclass(frozen=True)
class _Option:
    dest: str
    store: bool  # True: takes a value (``--name=value``); False: a flag storing ``const``
    const: tp.Any = None
    type: tp.Any = None
    choices: tp.Any = None


class _Table:
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.n_actions = len(parser._actions)
        self.defaults_snapshot = dict(parser._defaults)
        self.options: dict[str, _Option | None] = {}
        self.defaults: dict[str, tp.Any] | None = None
        self.get_default: dict[str, tp.Any] = {}
        for action in parser._actions:
            # As `ArgumentParser.get_default`: the first action of that dest whose default
            # is not None, else the parser-level defaults.
            if action.dest not in self.get_default and action.default is not None:
                self.get_default[action.dest] = action.default
        if not self._simple(parser):
            return
        for action in parser._actions:
            option: _Option | None = None
            if type(action) is argparse._StoreAction and action.nargs is None \
                    and action.type in _PURE_TYPES:
                option = _Option(action.dest, True, type=action.type, choices=action.choices)
            elif type(action) in _CONST_ACTIONS:
                option = _Option(action.dest, False, const=action.const)
            for string in action.option_strings:
                self.options[string] = option  # None: argparse must handle it
        try:
            namespace = _parse_quietly(parser, [])
        except _Refused:
            return
        self.defaults = vars(namespace)

    @staticmethod
    def _simple(parser: argparse.ArgumentParser) -> bool:
        if parser.prefix_chars != "-" or parser.fromfile_prefix_chars:
            return False
        if parser._mutually_exclusive_groups:
            return False
        # Positionals may stay (optional ones: grids' tokens never feed them, so they
        # end as in ``parse_args([])``); required arguments and sub-commands may not.
        return not any(action.required or isinstance(action, argparse._SubParsersAction)
                       for action in parser._actions)

    def fresh(self, parser: argparse.ArgumentParser) -> bool:
        return len(parser._actions) == self.n_actions and \
            parser._defaults == self.defaults_snapshot


class _Refused(Exception):
    pass


@contextmanager
def parser_errors(parser: argparse.ArgumentParser,
                  error: tp.Callable[[str], tp.NoReturn]) -> tp.Iterator[None]:
    """While inside, argparse errors of ``parser`` call ``error(message)`` instead of
    printing usage and exiting; the parser is as before afterwards."""
    had_own = "error" in vars(parser)
    old = vars(parser).get("error")
    parser.error = error  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        if had_own:
            parser.error = old  # type: ignore[method-assign,assignment]
        else:
            del parser.error


def _parse_quietly(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    def refuse(message: str) -> tp.NoReturn:
        raise _Refused(message)
    try:
        with parser_errors(parser, refuse):
            return parser.parse_args(argv)
    except SystemExit as exc:  # e.g. --help in the defaults: not a simple parser
        raise _Refused(str(exc)) from None


class FastParser:
    """Parses the simple argument lists of grids as ``parser`` would, or declines.

    The parser may still change after this is made (arguments added,
    ``set_defaults``): such changes are noticed and the tables rebuilt.
    """

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self._table: _Table | None = None

    def _current(self) -> _Table:
        table = self._table
        if table is None or not table.fresh(self.parser):
            table = self._table = _Table(self.parser)
        return table

    def get_default(self, dest: str) -> tp.Any:
        """``parser.get_default(dest)``, from a table instead of a scan of every action."""
        table = self._current()
        if dest in table.get_default:
            return table.get_default[dest]
        return table.defaults_snapshot.get(dest)

    def delta(self, args: argparse.Namespace) -> list[tuple[str, tp.Any]]:
        """The ``(dest, value)`` pairs of ``args`` that differ from `get_default`: one
        freshness check for all of them (grids ask this for each of 100,000s of XPs)."""
        table = self._current()
        known, snapshot = table.get_default, table.defaults_snapshot
        return [(key, value) for key, value in vars(args).items()
                if (known[key] if key in known else snapshot.get(key)) != value]

    def parse(self, argv: tp.Sequence[str]) -> argparse.Namespace | None:
        """The namespace ``parser.parse_args(argv)`` returns, or None to let argparse do it."""
        table = self._current()
        if table.defaults is None:
            return None
        values = dict(table.defaults)
        options = table.options
        for token in argv:
            if not token.startswith("--") or token == "--":
                return None
            option = options.get(token)
            if option is not None:
                if option.store:
                    return None  # the value is the next token: argparse's business
                values[option.dest] = option.const
                continue
            if token in options:
                return None  # an option argparse must handle (--help, append, ...)
            name, sep, raw = token.partition("=")
            option = options.get(name)
            if not sep or raw in ("", "--") or option is None or not option.store:
                return None  # (argparse drops a "--" value: its business too)
            value: tp.Any = raw
            if option.type is not None:
                try:
                    value = option.type(raw)
                except (TypeError, ValueError):
                    return None
            if option.choices is not None and value not in option.choices:
                return None
            values[option.dest] = value
        namespace = argparse.Namespace()
        namespace.__dict__.update(values)  # what Namespace(**values) does, minus a setattr each
        return namespace
