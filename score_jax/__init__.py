"""score_jax: SCoRe self-correction training for language models in JAX."""

__version__ = "0.1.0"
