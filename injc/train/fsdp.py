"""`injc train --strategy fsdp`: parameters, gradients and optimizer state sharded over the ranks with FSDP2
(`torch.distributed.fsdp.fully_shard`) on Lightning Fabric's ModelParallelStrategy. Fabric's FSDPStrategy (FSDP1)
refuses the CPU; this one runs on gloo too, so the same code is tested in CI on the CPU and used on GPUs.

Checkpoints stay what a single device writes: full state dicts are gathered from the shards (a collective: every
rank takes part, rank 0 receives them), the model's in LitGPT's layout and the optimizer's keyed by parameter
index as `torch.optim.Optimizer.state_dict()` keys it. So a checkpoint resumes under any strategy and device
count, and `injc eval` and LitGPT load it as they load any other.
"""

import torch


def shard_blocks(model: torch.nn.Module, mesh) -> torch.nn.Module:
    """Each transformer block one FSDP unit (its parameters gathered only while it runs), then the rest at the
    root (embedding, final norm, head): the wrapping LitGPT's own FSDP recipe uses."""
    from torch.distributed.fsdp import fully_shard

    for block in model.transformer.h:
        fully_shard(block, mesh=mesh["data_parallel"])
    return fully_shard(model, mesh=mesh["data_parallel"])


def fsdp_strategy(world: int):
    """Pure data parallelism over all `world` ranks (no tensor parallelism), parameters sharded."""
    from lightning.fabric.strategies import ModelParallelStrategy

    return ModelParallelStrategy(shard_blocks, data_parallel_size=world, tensor_parallel_size=1)


def _names(module: torch.nn.Module) -> list[str]:
    """Parameter names in the optimizer's order (it was built from `module.parameters()`)."""
    return [name for name, _ in module.named_parameters()]


def full_state(model, optimizer) -> tuple[dict, dict]:
    """(model state dict, optimizer state dict) gathered whole from the shards; call on every rank (rank 0 gets
    them, the others empty dicts)."""
    from torch.distributed.checkpoint import state_dict as distributed

    options = distributed.StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = distributed.get_model_state_dict(model.module, options=options)
    moments = distributed.get_optimizer_state_dict(model.module, optimizer.optimizer, options=options)
    if not moments:
        return weights, moments
    index = {name: position for position, name in enumerate(_names(model.module))}
    return weights, {"state": {index[name]: value for name, value in moments["state"].items()},
                     "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                                      for group in moments["param_groups"]]}


def load_optimizer(model, optimizer, state: dict) -> None:
    """Load a plain optimizer state dict (keyed by parameter index) into the sharded optimizer, on every rank."""
    from torch.distributed.checkpoint import state_dict as distributed

    names = _names(model.module)
    by_name = {"state": {names[position]: value for position, value in state["state"].items()},
               "param_groups": [{**group, "params": [names[position] for position in group["params"]]}
                                for group in state["param_groups"]]}
    distributed.set_optimizer_state_dict(model.module, optimizer.optimizer, by_name,
                                         options=distributed.StateDictOptions(full_state_dict=True))
