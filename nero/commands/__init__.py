"""The ``nero`` subcommands: one module each, every one with ``add(subparsers)`` (its flags,
whose choices and defaults come from the engine's tables) and ``run(args)``."""

from nero.commands import data, evaluate, explain, runs, score, serve

MODULES = (evaluate, score, runs, data, serve, explain)
