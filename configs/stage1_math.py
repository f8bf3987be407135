"""SCoRe Stage I on MATH (PRM800K split: 12,000 train problems, MATH500 held out).

    python -m score_jax.main --config=configs/stage1_math.py --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/gemma-2-2b-it \
        --config.data.manual_dir=/path/to/math_files

Needs: an HF checkpoint directory (config.json, *.safetensors, tokenizer) and the MATH files
(third_party/DATASETS.md). Stage I rewards only the second attempt and holds the first attempt to
the base model with the strong KL weight beta2; its checkpoint starts Stage II
(configs/stage2_math.py with --config.rl.init_from=$WORKDIR/checkpoints). Hyperparameters are the
paper's (Kumar et al. 2024, Table 5); the stage split, group size and token budget are ours.
"""

from score_jax.config import base_config


def get_config():
    c = base_config()
    c.require_real_paths = True
    c.model.preset = "gemma2_2b"  # overridden by the checkpoint's config.json
    c.model.tokenizer = ""  # the checkpoint's own tokenizer
    c.model.param_dtype = "float32"
    c.model.dtype = "bfloat16"
    c.model.reference_dtype = "bfloat16"
    c.model.remat_policy = "dots_no_batch"
    c.model.scan_layers = True
    c.mesh.shape = (1, -1, 1)
    c.mesh.rules = "fsdp"
    c.data.benchmark = "math"
    c.data.train = "math/prm800k:train"
    c.data.eval = "math/prm800k:test"
    c.data.prompt_preset = "paper"
    c.rl.schedule = "stage1:1000"
    c.rl.prompts_per_step = 128  # x 4 samples = 512 episodes, the paper's batch size
    c.rl.samples_per_prompt = 4
    c.rl.alpha = 10.0
    c.rl.beta1 = 0.01
    c.rl.beta2 = 0.1
    c.rl.max_new_tokens = 1024
    c.rl.prompt_buckets = (256, 512, 1024)
    c.optim.learning_rate = 5e-6
    c.optim.warmup_steps = 20
    c.optim.num_microbatches = 8
    c.checkpoint.every_steps = 50
    c.eval.every_steps = 250
    c.eval.num_examples = 500
    c.eval.batch_size = 64
    return c
