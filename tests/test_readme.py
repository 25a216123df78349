"""The README's command sequences run as written, in order, in a fresh clone: every folder
a command reads was written by a command above it, and every flag a command passes is one
its script offers."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: flag that names a folder a command reads -> the flag of the command that writes it
READS = {"--inr-dir": "--out", "--zoo-dir": "--out", "--describe": "--out"}


def bash_blocks(text: str) -> list[list[list[str]]]:
    """Each ```bash block as its commands, each command as its words (continuation lines
    joined, comments dropped)."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = body.replace("\\\n", " ")
        commands = [shlex.split(line, comments=True) for line in joined.splitlines()]
        blocks.append([c for c in commands if c])
    return blocks


def module_of(words: list[str]) -> str | None:
    """The module a ``python -m M`` or ``torchrun ... -m M`` command runs."""
    if words[0] not in ("python", "torchrun") or "-m" not in words:
        return None
    return words[words.index("-m") + 1]


def flag_values(words: list[str], flag: str) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == flag]


def project_commands() -> list[tuple[str, list[str]]]:
    """(module, words) of every README command that runs a module of this repository."""
    out = []
    for block in bash_blocks(README.read_text()):
        for words in block:
            module = module_of(words)
            if module and (REPO / (module.replace(".", "/") + ".py")).exists() or (
                    module and (REPO / module.replace(".", "/") / "__main__.py").exists()):
                out.append((module, words))
    return out


def test_readme_has_command_blocks() -> None:
    modules = {m for m, _ in project_commands()}
    assert {"MNIST_INR_Fit", "MNIST_INR_Classification_Train", "CNN_Zoo_Generate",
            "CNN_Generalization_Train", "utils.summarize"} <= modules, modules


def test_every_folder_a_command_reads_was_written_above_it() -> None:
    """The fit wrote to data/mnist_inrs_fast while the next command read runs/inr_fast."""
    written: set[str] = set()
    problems = []
    for module, words in project_commands():
        for read_flag in READS:
            for folder in flag_values(words, read_flag):
                if folder not in written:
                    problems.append(f"{module} {read_flag} {folder}: no command above "
                                    f"writes it (written so far: {sorted(written)})")
        written.update(flag_values(words, "--out"))
    assert not problems, "\n".join(problems)


def test_summaries_read_the_log_folders_the_runs_wrote() -> None:
    logs: set[str] = set()
    problems = []
    for module, words in project_commands():
        log_dirs = flag_values(words, "--log-dir") or ["log"]
        if module == "utils.summarize":
            if log_dirs[0] not in logs:
                problems.append(f"utils.summarize --log-dir {log_dirs[0]}: no run above "
                                f"logs there (runs log to {sorted(logs)})")
        else:
            logs.update(log_dirs)
    assert not problems, "\n".join(problems)


#: Runs ``python -m MODULE --help`` for every module named on its command line, in one
#: interpreter (runpy, as ``python -m`` does), so torch and PyG are imported once rather than
#: once a module; prints {module: [exit status, help text]} as JSON.
HELP_ALL = """
import contextlib, io, json, runpy, sys
texts = {}
for module in sys.argv[1:]:
    sys.argv, out, status = [module, "--help"], io.StringIO(), 0
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as done:
            status = done.code
    texts[module] = [status, out.getvalue()]
print(json.dumps(texts))
"""


@cache
def help_texts() -> dict[str, list]:
    modules = sorted({m for m, _ in project_commands()})
    done = subprocess.run([sys.executable, "-c", HELP_ALL, *modules], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"--help of {modules}: {done.stderr}"
    return json.loads(done.stdout)


def help_text(module: str) -> str:
    status, text = help_texts()[module]
    assert status in (0, None), f"python -m {module} --help exited with {status}"
    return text


@pytest.mark.parametrize("module", sorted({m for m, _ in project_commands()}))
def test_every_flag_of_a_readme_command_is_offered(module: str) -> None:
    text = help_text(module)
    used = {w.split("=")[0] for m, words in project_commands() if m == module
            for w in words[words.index(m) + 1:] if w.startswith("--")}
    missing = sorted(f for f in used if not re.search(rf"{re.escape(f)}\b", text))
    assert not missing, f"python -m {module} does not offer {missing}"
