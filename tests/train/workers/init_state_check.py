"""Run under torchrun: a Trainer's init_state lands whole in a model sharded across the ranks.

argv: the JSON file rank 0 writes the largest weight difference to, then `--section.key value` recipe
overrides (the layout among them).
"""

import json
import sys

import torch

from llamafoundry.model import Transformer
from llamafoundry.train import Trainer, load_run_recipe
from llamafoundry.train.distributed import init_runtime, shutdown
from llamafoundry.train.parallel import gather_model


def main() -> None:
    runtime = init_runtime()
    recipe = load_run_recipe(None, sys.argv[2:])
    torch.manual_seed(recipe.train.seed + 1)  # weights other than the ones the trainer initialises
    state = Transformer(recipe.model_config()).state_dict()
    trainer = Trainer(recipe, runtime=runtime, init_state=state)
    loaded = gather_model(trainer.model, trainer.model_cfg)
    if loaded is not None:
        diff = max((loaded.state_dict()[name] - w).abs().max().item() for name, w in state.items())
        with open(sys.argv[1], "w") as f:
            json.dump({"max_diff": diff}, f)
    shutdown(runtime)


if __name__ == "__main__":
    main()
