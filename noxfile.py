"""Sessions: tests (the suite), lint (ruff), typecheck (mypy), bench (benchmarks vs Dora)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite; as root with apt it starts a real Slurm cluster and sshd."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "adora", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, side by side with dora-search 0.1.13 (installed in its own venv)."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def slurm(session: nox.Session) -> None:
    """Start (or `-- stop`) the single-node Slurm test cluster."""
    session.install("-e", ".")
    session.run("python", "-m", "adora.testing.slurm_cluster", *(session.posargs or ["start"]))
