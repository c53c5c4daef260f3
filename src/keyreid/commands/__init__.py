"""Sub-commands of the `keyreid` CLI, one module per group."""
