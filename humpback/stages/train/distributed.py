"""One process of a data-parallel training: ``torchrun --nproc_per_node N -m humpback.stages.train.distributed WORK``.

``humpback.stages.train.sft`` launches it when ``train.processes`` > 1, after it has written the examples
(WORK/train_data.parquet) and the spec (WORK/distributed.json: the config, the checkpoint to resume, where the model
goes). Every process trains on its share of each batch (the HF Trainer runs DDP under torchrun: NCCL on GPUs,
gloo on CPUs); the first one saves the model and writes WORK/distributed_result.json for the launching process,
which writes the summary, the card and the marker and publishes the model, as for one process.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path


def main(work: Path) -> int:
    from ...core.models import load_tokenizer, resolve
    from ...core.records import read_table, write_json
    from .config import TrainConfig
    from .data import Example
    from .sft import CHECKPOINTS, DISTRIBUTED_RESULT, DISTRIBUTED_SPEC, TRAIN_DATA, train_and_save

    spec = json.loads((work / DISTRIBUTED_SPEC).read_text())
    config = TrainConfig.model_validate(spec["config"])
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    examples = [Example(messages=r["messages"], origin=r["origin"], source_index=0)
                for r in read_table(work / TRAIN_DATA).to_pylist()]
    resolved = resolve(config.base_model)
    latest = (spec["latest"][0], Path(spec["latest"][1])) if spec["latest"] else None
    trained = train_and_save(examples, resolved, config, work / CHECKPOINTS, load_tokenizer(resolved), latest,
                             Path(spec["final"]))
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        write_json(asdict(trained), work / DISTRIBUTED_RESULT)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(Path(sys.argv[1])))
