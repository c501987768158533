"""`python -m tallyhub` is the `tallyhub` command."""

from tallyhub.collector_processor.cli import main

main()
