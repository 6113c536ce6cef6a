"""Sub-commands of ``driftline`` beyond the stream itself, one module each.

Each module defines ``register(subparsers)``, adding its sub-parser(s) with ``set_defaults(func=...)``
where ``func(args) -> int``. ``driftline.apps.cli`` imports the modules listed in ``MODULES``.
"""

MODULES: tuple[str, ...] = (
    "driftline.apps.commands.alerting_cli",
    "driftline.apps.commands.ops_cli",
    "driftline.apps.commands.baseline_cli",
    "driftline.apps.commands.models_cli",
    "driftline.apps.commands.quickstart_cli",
)
