"""SCoRe Stage I on code: train on MBPP (3-shot first turns), evaluate on HumanEval (zero-shot).

    python -m score_jax.main --config=configs/stage1_code.py --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/gemma-2-2b-it \
        --config.data.manual_dir=/path/to/code_files

Needs: an HF checkpoint directory, and mbpp.jsonl plus HumanEval.jsonl.gz in the manual
directory (third_party/DATASETS.md). Rewards run the programs in score_jax's sandbox.
Hyperparameters are the paper's for MBPP (Kumar et al. 2024, Table 8); the split is ours.
"""

from score_jax.config import base_config


def get_config():
    c = base_config()
    c.require_real_paths = True
    c.model.preset = "gemma2_2b"  # overridden by the checkpoint's config.json
    c.model.tokenizer = ""  # the checkpoint's own tokenizer
    c.model.dtype = "bfloat16"
    c.model.reference_dtype = "bfloat16"
    c.model.remat_policy = "dots_no_batch"
    c.model.scan_layers = True
    c.data.benchmark = "code"
    c.data.train = "mbpp/full:train"
    c.data.eval = "humaneval:test"
    c.data.prompt_preset = "paper"
    c.rl.schedule = "stage1:500"
    c.rl.prompts_per_step = 32  # x 4 samples = 128 episodes, the paper's batch size
    c.rl.samples_per_prompt = 4
    c.rl.alpha = 10.0
    c.rl.beta1 = 0.01
    c.rl.beta2 = 0.25
    c.rl.max_new_tokens = 512
    c.rl.prompt_buckets = (512, 1024, 2048)
    c.optim.learning_rate = 1e-5
    c.optim.warmup_steps = 20
    c.optim.num_microbatches = 4
    c.checkpoint.every_steps = 50
    c.eval.every_steps = 250
    c.eval.num_examples = 0
    c.eval.batch_size = 32
    return c
