"""`python -m ragfn` is the `ragfn` command."""

from ragfn.cli.main import app

app()
