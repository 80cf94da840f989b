"""`python -m adora` is the `adora` command."""

from .cli import run

if __name__ == "__main__":
    run()
