"""How every entry point starts, and how it refuses a user's mistake: one line, exit status 2.

    from launch import cli
    cli.define_config("configs/paper.py:synthetic")  # --config, its overrides checked
    ...
    if __name__ == "__main__":
        cli.run(main, outputs=["workdir"])

A user's mistake (a bad flag, an unknown or invalid config key, a missing or refused path,
an unusable corpus file: `w2v_jax.errors.UserError` and the errors listed in `_user_error`)
prints `launch.NAME: error: MESSAGE` on stderr and exits 2; `--verbosity=1` shows the
traceback too. Anything else is a bug and keeps its traceback. Directories that a refused
run created and left without a file are removed.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import sys
from typing import Callable, Sequence

from absl import app, flags
from ml_collections import config_dict, config_flags

from w2v_jax import files

FLAGS = flags.FLAGS
EXIT_USER_ERROR = 2


def run(main: Callable[[list[str]], object], outputs: Sequence[str] = ()) -> None:
    """`absl.app.run(main)`, with user errors as one line and exit 2.

    outputs: names of flags whose directory the run creates; if the run fails, each one it
    created is removed again when it holds no file (a refused run leaves nothing behind).
    """

    def guarded(argv):
        from w2v_jax.logs import quiet_progress_bars

        quiet_progress_bars()
        created = [p for p in (_first_missing(FLAGS[name].value) for name in outputs) if p]
        try:
            return main(argv)
        except BaseException as e:
            for path in created:
                _remove_if_no_files(path)
            if _user_error(e) and not _verbose(argv):
                _fail(_describe(e))
            raise

    app.run(guarded, flags_parser=_parse_flags)


def define_config(default: str | None, help_string: str = "Config file: configs/FILE.py:ARG.",
                  name: str = "config") -> None:
    """`config_flags.DEFINE_config_file` (locked), whose `--config.KEY=VALUE` overrides are
    checked first: a misspelt key fails naming the nearest valid one, not as a traceback.

    ml_collections parses a default config while the flag is defined (at import), so the
    check runs here, on sys.argv, before it.
    """
    _check_config_overrides(sys.argv, name, default)
    config_flags.DEFINE_config_file(name, default, help_string, lock_config=True)


def existing_dirs(*names: str) -> None:
    """Refuse, while flags are parsed, a value of these flags that is not a directory."""
    for name in names:
        flags.register_validator(name, lambda v: v is None or files.path(v).is_dir(),
                                 message="no such directory")


# ------------------------------------------------------------------ config overrides
def _check_config_overrides(argv: Sequence[str], name: str, default: str | None) -> None:
    overrides = [m.group(1) for a in argv
                 if (m := re.match(rf"^--?(?:no)?{name}\.([^=]+)", a))]
    spec = _flag_value(argv, name) or default
    if not spec:
        return
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
        _fail(f"--{name}={spec}: no such file {path!r}", argv)
    try:
        config = config_flags.config_flags.ConfigFileFlagParser(name, lock_config=False).parse(spec)
    except (ValueError, TypeError) as e:  # the config file's own complaint (e.g. about its ARG)
        if _verbose(argv):
            raise
        # ml_collections puts the traceback in the message; its last line is "ValueError: ..."
        message = re.sub(r"^\w+: ", "", str(e).strip().splitlines()[-1])
        _fail(f"--{name}={spec}: {message}", argv)
    for key in overrides:
        problem = _unknown_key(config, key.split("[", 1)[0])
        if problem:
            _fail(f"--{name}.{key}: {problem}", argv)


def _unknown_key(config: config_dict.ConfigDict, key: str) -> str | None:
    """None if `key` (dotted) names a field of `config`, else the complaint in plain words."""
    holder, parts = config, key.split(".")
    for i, part in enumerate(parts):
        parent = ".".join(parts[:i])
        if not isinstance(holder, (config_dict.ConfigDict, dict)):
            return f"unknown key {key!r}: {parent!r} is a value, not a group of keys"
        if part not in holder:
            siblings = sorted(map(str, holder))
            near = difflib.get_close_matches(part, siblings, n=1, cutoff=0.6)
            if near:
                fixed = ".".join([*parts[:i], near[0], *parts[i + 1:]])
                if _unknown_key(config, fixed) is not None:  # the rest is wrong too
                    fixed = ".".join([*parts[:i], near[0]])
                return f"unknown key {key!r}: did you mean {fixed!r}?"
            where = f"under {parent!r}" if parent else "at the top"
            return f"unknown key {key!r}; the keys {where} are {', '.join(siblings)}"
        holder = holder[part]
    return None


# ------------------------------------------------------------------ flags and failing
def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(str(e), argv)


def _user_error(e: BaseException) -> bool:
    from w2v_jax.errors import UserError
    from w2v_jax.hf.convert import CheckpointError

    # A path the user named that is missing, or that a run refuses to overwrite.
    paths = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)
    return isinstance(e, (UserError, CheckpointError, app.UsageError, flags.Error, *paths))


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e).strip()


def _fail(message: str, argv: Sequence[str] | None = None) -> None:
    program = os.path.splitext(os.path.basename((argv or sys.argv)[0]))[0]
    lines = message.splitlines() or ["(no message)"]
    print(f"launch.{program}: error: {' '.join(line.strip() for line in lines)}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith((f"--{name}=", f"-{name}=")):
            value = arg.split("=", 1)[1]
        elif arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _verbose(argv: Sequence[str]) -> bool:
    """--verbosity=1 (or -v 1) or more: the user asked for tracebacks."""
    if FLAGS.is_parsed():
        return FLAGS.verbosity >= 1
    value = _flag_value(argv, "verbosity") or _flag_value(argv, "v")
    try:
        return value is not None and int(value) >= 1
    except ValueError:
        return False


def _first_missing(path: str | None) -> str | None:
    """The outermost directory of `path` that does not exist yet (what a run would create); None
    on an object store, which has no empty directories to leave behind."""
    if not path or not files.is_local(path) or os.path.exists(path):
        return None
    path = os.path.abspath(path)
    while not os.path.exists(os.path.dirname(path)):
        path = os.path.dirname(path)
    return path


def _remove_if_no_files(path: str) -> None:
    if os.path.isdir(path) and not any(files for _, _, files in os.walk(path)):
        shutil.rmtree(path)
