"""Start a stage as one process, or as `processes` data-parallel replicas through torchrun.

    python -m zorkppo.launch stages.ppo [--params params.yaml]

With `processes: 1` (the default) the stage runs here, in this process, exactly as
`python -m stages.ppo` would. Otherwise this process becomes torchrun (same interpreter),
which starts the replicas on this machine and sets RANK / WORLD_SIZE / LOCAL_RANK for them.
Several machines: torchrun reads its rendezvous from the environment (PET_NNODES,
PET_NODE_RANK, PET_RDZV_ENDPOINT, PET_RDZV_BACKEND, PET_RDZV_ID); set them on every
machine and run the same command on each (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

from zorkppo.config import PARAMS_FILE, Params, load_params
from zorkppo.distributed import Replicas
from zorkppo.errors import UserError, exit_on_user_error

# the stages that run data-parallel, and the counts each replica takes an equal share of
STAGES = {
    "stages.sft": ("sft.batch_size",),
    "stages.ppo": ("ppo.num_envs", "ppo.minibatch_size"),
}


def machines(environ=os.environ) -> int:
    nodes = environ.get("PET_NNODES", "1")
    if not nodes.isdigit() or int(nodes) < 1:
        raise UserError(f"PET_NNODES is {nodes!r}: set it to the number of machines (e.g. 2)")
    return int(nodes)


def check_split(params: Params, stage: str, world: int) -> None:
    """Fail here, in one line, rather than in every replica under torchrun's report."""
    replicas = Replicas(world=world)
    for name in STAGES[stage]:
        section, key = name.split(".")
        replicas.split(getattr(getattr(params, section), key), name)


def torchrun_command(stage: str, args: list[str], processes: int, nodes: int) -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
    if nodes == 1:
        command.append("--standalone")  # a local rendezvous on a free port
    return [*command, "-m", stage, *args]


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--params", default=str(PARAMS_FILE))
    options = parser.parse_args(argv)
    stage_args = ["--params", options.params]
    params = load_params(options.params)
    nodes = machines()
    if params.processes == 1 and nodes == 1:
        sys.argv = [options.stage, *stage_args]
        runpy.run_module(options.stage, run_name="__main__", alter_sys=True)
        return
    check_split(params, options.stage, params.processes * nodes)
    command = torchrun_command(options.stage, stage_args, params.processes, nodes)
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
