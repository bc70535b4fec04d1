"""The Docker images, checked without a Docker engine: every file and command they reference
exists, and the README's build/run commands name the images that exist."""
import glob
import json
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILES = sorted(glob.glob(os.path.join(ROOT, "docker", "*.Dockerfile")))


def instructions(path):
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    with open(path) as f:
        text = re.sub(r"\\\n", " ", "".join(l for l in f if not l.lstrip().startswith("#")))
    return [tuple(line.strip().split(None, 1)) for line in text.splitlines() if line.strip()]


def test_there_is_a_gpu_and_a_tpu_image():
    assert {os.path.basename(p) for p in DOCKERFILES} >= {"gpu.Dockerfile", "tpu.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=os.path.basename)
def test_every_file_and_command_an_image_references_exists(path):
    steps = instructions(path)
    assert steps[0][0] == "FROM"
    copied = [p for op, args in steps if op == "COPY" for p in shlex.split(args)[:-1]]
    assert copied
    for source in copied:
        assert os.path.exists(os.path.join(ROOT, source)), f"{source} (COPY in {path})"
    command = [a for op, args in steps if op in ("ENTRYPOINT", "CMD") for a in json.loads(args)]
    module = command[command.index("-m") + 1]
    assert os.path.isfile(os.path.join(ROOT, *module.split(".")) + ".py"), module
    configs = [a.split("=", 1)[1].split(":")[0] for a in command if a.startswith("--config=")]
    assert configs and all(os.path.isfile(os.path.join(ROOT, c)) for c in configs), configs
    assert any(a.startswith("--workdir=") for a in command)
    installs = " ".join(args for op, args in steps if op == "RUN")
    assert "pip install" in installs and "-e ." in installs  # the project itself


def test_readme_docker_commands_name_existing_files():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    named = re.findall(r"docker build -f (\S+)", readme)
    assert {os.path.basename(n) for n in named} == {os.path.basename(p) for p in DOCKERFILES}
    assert all(os.path.isfile(os.path.join(ROOT, n)) for n in named)
    assert re.search(r"docker run --gpus all .*tfscale:gpu", readme)
    assert re.search(r"docker run --privileged --net=host .*tfscale:tpu", readme)
