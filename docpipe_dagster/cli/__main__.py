"""`python -m docpipe_dagster.cli` is the `docpipe` command."""

from docpipe_dagster.cli import main

main()
