"""The user's verbs of the `deltaflow` command, one module each: `add_arguments(parser)` and
`run(args) -> int`."""
