"""`python -m kubetune_local.nodeagent` runs the node agent."""

from kubetune_local.nodeagent import main

main()
