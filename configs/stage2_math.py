"""SCoRe on MATH: Stage I then Stage II in one run (or Stage II alone from a Stage I checkpoint).

    python -m score_jax.main --config=configs/stage2_math.py --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/gemma-2-2b-it \
        --config.data.manual_dir=/path/to/math_files

Starting from a separate Stage I run (configs/stage1_math.py) instead:

        --config.rl.schedule=stage2:2000 --config.rl.init_from=$STAGE1_WORKDIR/checkpoints

Needs: an HF checkpoint directory and the MATH files (third_party/DATASETS.md). Stage II rewards
both attempts with the shaping bonus alpha * (r(y2) - r(y1)) and KL weight beta1. The paper's
schedule may alternate stages: e.g. --config.rl.schedule=stage1:500,stage2:1000,stage1:500,stage2:1000.
Expect on MATH500 (paper, Gemini 1.5 Flash): Acc@t1 60.0, Acc@t2 64.4, Delta +4.4.
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
    c.rl.schedule = "stage1:1000,stage2:2000"  # 3000 steps in all, as in the paper
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
