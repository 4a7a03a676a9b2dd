"""`python -m rftfm_agent.cli` runs the `rftfm` command line."""

from rftfm_agent.cli import main

main()
