"""The pipeline's stages as plain functions: Config and Layout in, files declared in dvc.yaml out.

One module per DVC stage, so each stage in dvc.yaml depends on its own code only. The CLI (and so
DVC) calls these; tests call them directly. Every output is written to a temporary path and renamed
into place, so an interrupted stage leaves the previous outputs intact.
"""

from trackvision.stages.augment import augment
from trackvision.stages.balance import balance
from trackvision.stages.compare import compare
from trackvision.stages.download import download
from trackvision.stages.evaluate import evaluate
from trackvision.stages.train import train

__all__ = ["augment", "balance", "compare", "download", "evaluate", "train"]
