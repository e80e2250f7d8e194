"""`python -m ragfn` is the `ragfn` command."""

from ragfn.cli import app

app()
