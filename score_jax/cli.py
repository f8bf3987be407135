"""What the command-line entry points share: config mistakes reported in one message, no traceback.

``drop_unknown_overrides()`` runs before the config flag is defined, and ``run(main)`` replaces
``absl.app.run(main)``. The first checks every ``--config.FIELD=VALUE`` override against the
config's fields: an unknown one (ml_collections would stop at the first with a long traceback) is
taken out of ``sys.argv`` and remembered, with the nearest field name as a "did you mean". The rest
parse as usual; then the remembered mistakes and every problem
`score_jax.config.validate` finds in the parsed config are printed together, and the command
exits with status 2. A ConfigError raised later inside `main` is printed the same way.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence

import ml_collections

from score_jax import config as config_lib

EXIT_CONFIG_ERROR = 2


def flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name=VALUE`` or ``--name VALUE`` in `argv` (the last one), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``configs/FILE.py[:ARG]`` -> its ``get_config(ARG)`` (as ml_collections' config flag loads it)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise config_lib.ConfigError(f"--config={spec}: no config file at {path!r}")
    module_spec = importlib.util.spec_from_file_location("score_jax_cli_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def field_names(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted field name of `config`, nested ConfigDicts included."""
    names = []
    for key, value in config.items():
        names.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            names += field_names(value, f"{prefix}{key}.")
    return names


def unknown_overrides(
    argv: Sequence[str], config: ml_collections.ConfigDict, flag: str = "config"
) -> tuple[list[str], list[str]]:
    """(`argv` without overrides of fields `config` lacks, one message per such override)."""
    names = field_names(config)
    kept, problems, skip = [], [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if not arg.startswith(f"--{flag}."):
            kept.append(arg)
            continue
        field = arg[len(flag) + 3 :].split("=", 1)[0]
        if field in names:
            kept.append(arg)
            continue
        skip = "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("--")
        near = difflib.get_close_matches(field, names, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}?" if near else "; the fields are listed in score_jax/config.py base_config()"
        problems.append(f"--{flag}.{field}: the config has no field {field}{hint}")
    return kept, problems


def exit_with_config_error(message: str) -> None:
    """Prints `message` as a config error on stderr and exits with status 2 (no traceback)."""
    print(f"config error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG_ERROR)


# Unknown-field overrides `drop_unknown_overrides` took out of sys.argv, reported by `run`.
_DROPPED: list[str] = []


def drop_unknown_overrides(base_config: ml_collections.ConfigDict | None = None) -> None:
    """Takes ``--config.FIELD`` overrides of fields the config lacks out of ``sys.argv`` (for `run`
    to report). Call it before defining the config flag: ml_collections defines one flag per
    override from ``sys.argv`` then, and an unknown one stops it with a traceback.

    `base_config`: the config the overrides apply to when there is no ``--config=FILE`` flag
    (a run's own config.json, for `score_jax.evaluate`).
    """
    spec = flag_value(sys.argv, "config")
    try:
        base = load_config_file(spec) if spec else base_config
    except Exception:  # noqa: BLE001 - absl reports an unloadable config file itself
        base = None
    if base is not None:
        sys.argv[:], _DROPPED[:] = unknown_overrides(sys.argv, base)


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with config mistakes reported together, without a traceback (module
    docstring): the overrides `drop_unknown_overrides` took out and every problem
    `score_jax.config.config_problems` finds in the parsed ``--config``, or a ConfigError from `main`."""
    from absl import app, flags

    def checked_main(args):
        if _DROPPED:
            config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
            found = config_lib.config_problems(config) if config is not None else []
            exit_with_config_error(config_lib.format_problems(_DROPPED + found))
        try:
            main(args)
        except config_lib.ConfigError as e:
            exit_with_config_error(str(e))

    app.run(checked_main)
