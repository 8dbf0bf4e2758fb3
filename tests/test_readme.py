"""README.md's commands, run exactly as written on its small data, so the README cannot drift.

A ```sh block is commands (one a line, `\\` continues one), a ```python block a script.
A block after `<!-- readme-test: skip (REASON) -->` is not run: the demo (its pipeline
runs at CI size in tests/test_experiment.py), the test suite itself (.ci/run runs it), a
download, the real corpus; for every block, run or not, each `python -m launch.X` must
name an entry point, each `--flag` one of its flags and each `--config.KEY` a key of its
config. Two substitutions only: the README's scratch directory /tmp/w2v-jax becomes a
fresh temporary one, and `python` this interpreter. The Hugging Face checkpoint the README
downloads is a tiny random model made at the same path.
"""

import dataclasses
import importlib.metadata
import os
import re
import shlex
import subprocess
import sys

import pytest

from launch import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
SCRATCH = "/tmp/w2v-jax"
_BLOCK = re.compile(r"(?:<!-- readme-test: skip \((?P<skip>[^)]*)\) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```",
                    re.S)


@dataclasses.dataclass
class Block:
    lang: str
    body: str
    skip: str | None

    def commands(self) -> list[str]:
        return [c.strip() for c in self.body.replace("\\\n", " ").splitlines() if c.strip()]


def blocks() -> list[Block]:
    with open(README) as f:
        return [Block(m["lang"], m["body"], m["skip"]) for m in _BLOCK.finditer(f.read())]


def launch_commands():
    for block in blocks():
        if block.lang == "sh":
            for command in block.commands():
                for part in command.split("&&"):
                    argv = shlex.split(part)
                    if argv[:2] == [".venv/bin/python", "-m"] or argv[:2] == ["python", "-m"]:
                        if argv[2].startswith("launch."):
                            yield argv[2], argv[3:]


def test_every_block_is_run_or_says_why_not():
    found = blocks()
    assert [b.lang for b in found if b.lang not in ("sh", "python")] == []
    assert all(b.skip.strip() for b in found if b.skip is not None)
    assert sum(b.skip is None for b in found) >= 8  # the walk-through and the library snippets


def test_ci_runs_the_readmes_test_command_exactly():
    setup = [c for b in blocks() for c in b.commands() if c.startswith("python3 -m venv")]
    assert len(setup) == 2 and setup[0].endswith("launch.demo") and setup[1].endswith("pytest -q")
    assert setup[0].rsplit("&&", 1)[0] == setup[1].rsplit("&&", 1)[0]  # one set-up, two purposes
    with open(os.path.join(REPO, ".ci", "run")) as f:
        assert setup[1] in f.read().splitlines()


def _defined_flags(module: str) -> set[str]:
    """Flags an entry point defines (read from its source: importing several would clash)."""
    with open(os.path.join(REPO, *module.split(".")) + ".py") as f:
        source = f.read()
    names = set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source)) | {"verbosity"}
    if "cli.define_config(" in source:
        names.add("config")
    if "multihost" in source:
        names |= _defined_flags("launch.multihost")
    return names


def _config_default(module: str) -> str | None:
    with open(os.path.join(REPO, *module.split(".")) + ".py") as f:
        match = re.search(r"cli\.define_config\(\s*\"([^\"]+)\"", f.read())
    return match and match[1]


@pytest.mark.parametrize("module,args", list(launch_commands()),
                         ids=lambda x: x if isinstance(x, str) else None)
def test_flags_and_config_keys_exist(module, args):
    from ml_collections.config_flags import config_flags

    flags = _defined_flags(module)
    for arg in args:
        name = re.match(r"--(?:no)?([\w.]+)", arg)[1]
        assert name.split(".")[0] in flags, f"{module} has no flag --{name}"
    spec = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), _config_default(module))
    keys = [re.match(r"--config\.([\w.]+)", a)[1] for a in args if a.startswith("--config.")]
    if keys:
        config = config_flags.ConfigFileFlagParser("config").parse(os.path.join(REPO, spec))
        assert [cli._unknown_key(config, k) for k in keys] == [None] * len(keys)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The README's scratch directory, with the tiny random HF model the README downloads."""
    import torch
    import transformers

    from tests.tiny_hf import tiny_hf_config

    root = tmp_path_factory.mktemp("w2v-jax")
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(tiny_hf_config("group")).eval().save_pretrained(root / "wav2vec2-base")
    return str(root)


def _run(argv: list[str], cwd: str, what: str) -> None:
    # One CPU device, as a user's laptop; the repository importable also where the project is
    # not installed (test_the_package_imports_from_outside_the_repository checks the install).
    env = {**os.environ, "XLA_FLAGS": "",
           "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README: {what}\n{result.stderr[-3000:]}"


@pytest.mark.slow
def test_the_readmes_commands_run_as_written(scratch, tmp_path):
    """In README order: the walk-through, the library snippets, the HF checkpoint commands."""
    ran = 0
    for block in blocks():
        if block.skip is not None:
            continue
        body = block.body.replace(SCRATCH, scratch)
        if block.lang == "python":
            script = tmp_path / f"snippet{ran}.py"
            script.write_text(body)
            _run([sys.executable, str(script)], cwd=str(tmp_path), what=block.body)
            ran += 1
            continue
        for command, original in zip(Block("sh", body, None).commands(), block.commands()):
            argv = shlex.split(command)
            assert argv[0] == "python", original
            _run([sys.executable, *argv[1:]], cwd=REPO, what=original)
            ran += 1
    report = os.path.join(scratch, "report", "report.md")
    assert os.path.exists(report) and "random" in open(report).read()
    assert sorted(os.listdir(os.path.join(scratch, "emb"))) == ["base", "random", "tone"]
    assert ran >= 10


def test_the_package_imports_from_outside_the_repository(tmp_path):
    """After the README's set-up (`pip install ... -e .`): only where the project is installed."""
    try:
        importlib.metadata.distribution("w2v-jax")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("w2v-jax is not installed in this environment (the README's set-up installs it)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", "import w2v_jax, launch.cli; print(w2v_jax.__file__)"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(REPO)
