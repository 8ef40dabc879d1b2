# syntax=docker/dockerfile:1
#
# zork-ppo: the DVC pipeline in a container, for one cloud GPU.
#
# The image holds the pinned Python environment only (/opt/venv). The checkout (dvc.yaml,
# params.yaml, code, .git, .dvc) is mounted at /app when the container runs, so DVC sees the
# same repository, caches and outputs as on the host:
#
#   docker build -t zork-ppo .
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD":/app \
#     -v zork-ppo-cache:/cache -v /path/to/zork1.z5:/roms/zork1.z5:ro \
#     -e ZORK_ROM=/roms/zork1.z5 zork-ppo dvc repro
#
# Build arguments:
#   BASE_IMAGE  any Debian/Ubuntu image; python3 and git are installed from apt when missing.
#               The default is NVIDIA's smallest CUDA image, not a -cudnn-runtime one: the
#               CUDA and cuDNN libraries come from PyPI with torch (torch 2.13.0 on Linux is
#               the CUDA 13.0 build), a second copy would only add GBs. What the base adds
#               is NVIDIA_REQUIRE_CUDA=cuda>=13.0, read by the NVIDIA container runtime: a
#               host driver too old for CUDA 13.0 (< 580) is refused at `docker run` with a
#               clear message instead of torch silently falling back to the CPU.
#   EXTRAS      optional extras of the project, e.g. "dev" to get pytest in the image.
#   PIP_INDEX_URL, PIP_FIND_LINKS, PIP_CERT
#               read by pip as environment variables, only in the builder stage: a mirror,
#               a folder of prebuilt wheels (the slow test mounts a CPU torch wheel there
#               instead of downloading the several-GB CUDA build), a CA bundle for a proxy.
#
# Pins: constraints.txt (the project's full freeze) plus constraints-docker.txt (the CUDA
# packages that torch pulls on Linux, and pip/setuptools). Nothing is installed unpinned
# into /opt/venv.
#
# The Zork I ROM is never part of the image: mount it and point ZORK_ROM at it (see below).

ARG BASE_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

ARG DEBIAN_FRONTEND=noninteractive

# POSIX sh throughout, no SHELL instruction: buildah's default OCI format ignores SHELL.
# gcc, make and libc headers: Jericho has no wheel and compiles its frotz engine at install.
# python3-venv only where the base has no Python with venv+ensurepip (CUDA and Debian bases);
# a base that ships its own Python (e.g. pytorch/pytorch, conda) keeps it.
RUN set -- gcc make libc6-dev; \
    python3 -c 'import ensurepip, venv' 2>/dev/null || set -- "$@" python3 python3-venv; \
    apt-get update \
    && apt-get install -y --no-install-recommends "$@" \
    && rm -rf /var/lib/apt/lists/*

ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
ARG EXTRAS=""
# PIP_CONSTRAINT (not only -c) so that the isolated build environments of sdists (Jericho,
# the project itself) get the pinned setuptools too.
ENV PIP_CONSTRAINT="/src/constraints.txt /src/constraints-docker.txt" \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md constraints.txt constraints-docker.txt requirements-smol.txt ./

# Dependencies first, in their own layer: it is most of the build time and image size, and
# only pyproject.toml / the constraints invalidate it. Without zorkppo/ and stages/ yet, this
# installs every dependency and an empty zork-ppo distribution.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install pip setuptools \
    && /opt/venv/bin/pip install ".${EXTRAS:+[$EXTRAS]}" \
    && /opt/venv/bin/pip install --no-deps --require-hashes -r requirements-smol.txt

# The project itself (code changes rebuild only this layer). The mounted checkout at /app
# shadows it at run time (`python -m stages.x` imports from the working directory); the
# installed copy makes the image usable on its own, e.g. `python -c 'import zorkppo'`.
COPY zorkppo ./zorkppo
COPY stages ./stages
RUN /opt/venv/bin/pip install --no-deps ".${EXTRAS:+[$EXTRAS]}" \
    && /opt/venv/bin/python -c "import jericho, torch, zorkppo, stages"

# ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG DEBIAN_FRONTEND=noninteractive

# Runtime needs only: the same python3 the venv was made with (installed from apt exactly
# when the builder did), git (DVC's experiments and GitPython call it), CA certificates (the
# model hub), and tini as PID 1 so that Ctrl-C / `docker stop` reach DVC and the game workers
# are reaped. No compiler. The fixed uid 1000 matches the first user of most cloud images;
# Ubuntu bases already have a user "ubuntu" with that uid, so it is replaced.
RUN set -- git ca-certificates tini; \
    command -v python3 >/dev/null || set -- "$@" python3; \
    apt-get update \
    && apt-get install -y --no-install-recommends "$@" \
    && rm -rf /var/lib/apt/lists/* \
    && if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && useradd --uid 1000 --user-group --create-home --home-dir /home/zork --shell /bin/sh zork \
    && mkdir -p /app /cache/huggingface \
    && chown zork:zork /app /cache /cache/huggingface \
    && chmod 1777 /home/zork /cache /cache/huggingface

# The checkout is mounted from the host, so it belongs to another uid than the container
# user: git refuses it as "dubious ownership" without safe.directory, and `dvc exp run`
# stops without an identity for its experiment commits (a --user uid has no passwd entry
# to derive one from). Also in HOME: libgit2 in the pygit2 wheel may not read /etc/gitconfig.
RUN git config --system --add safe.directory '*' \
    && git config --system user.name "zork-ppo container" \
    && git config --system user.email "zork-ppo@localhost" \
    && cp /etc/gitconfig /home/zork/.gitconfig \
    && chmod 0644 /home/zork/.gitconfig

COPY --from=builder /opt/venv /opt/venv

# HOME and USER are fixed, HOME world-writable (1777 above), because `--user "$(id -u):$(id -g)"`
# may pick a uid with no passwd entry, where Python's getpass.getuser() (DVC's site cache,
# torch's compile cache) would fail. Every cache goes under /cache so that one volume keeps the
# ~15 GB of Qwen2.5-7B weights between runs. ZORK_ROM: the `rom` stage copies and md5-checks
# the file it names into data/roms/ (empty: ../shared/roms, then a download).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/home/zork \
    USER=zork \
    HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache \
    TRITON_CACHE_DIR=/cache/triton \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    ZORK_ROM=""

# Only the cache is a volume. data/, models/ and reports/ are NOT declared: a VOLUME under
# /app would get an anonymous volume mounted over the host's checkout (`-v "$PWD":/app`),
# hiding data/roms and sending every DVC output into a volume the host never sees. They are
# part of the mounted checkout, where DVC's cache (.dvc/cache) and dvc.lock expect them.
VOLUME ["/cache"]

WORKDIR /app
# Numeric, so that runtimes enforcing "run as non-root" (Kubernetes runAsNonRoot) can check it.
USER 1000:1000

ENTRYPOINT ["tini", "--"]
CMD ["dvc", "repro"]
