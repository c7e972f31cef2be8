"""Post-training nodes: datasets, fine-tuning (LoRA/full SFT, DPO), quantization,
pruning, evaluation and comparison — all on the CPU with the bundled SmolLM2 by default.

Models travel between nodes as model ids (``local:<name>``): every node that makes a
model saves it in the model store (see :mod:`nodes.training.models`), so it is also
in the model catalogue and the LLM node's picker.
"""

from __future__ import annotations

from flowbuilder.sdk import Registry
from nodes.training import datasets, evaluate, quantize, tune


def register(registry: Registry) -> None:
    """Add the post-training nodes to ``registry``."""
    for module in (datasets, tune, quantize, evaluate):
        for cls in module.NODES:
            registry.register(cls)
