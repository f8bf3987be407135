"""Runs the tiny trainer in a child process; optionally SIGKILLs itself after a given step.

python tests/train_worker.py WORKDIR TOTAL_STEPS [KILL_AFTER_STEP]
"""

import os
import signal
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(__file__))

from test_train import tiny_config  # noqa: E402

from score_jax import train  # noqa: E402


def main():
    workdir, total = sys.argv[1], int(sys.argv[2])
    kill_after = int(sys.argv[3]) if len(sys.argv) > 3 else None
    config = tiny_config(f"stage1:{total // 2},stage2:{total - total // 2}")
    config.checkpoint.every_steps = 1
    config.checkpoint.async_save = False  # the kill must come after the step's checkpoint is on disk
    config.eval.num_examples = 4
    config.eval.batch_size = 4

    def on_step_end(step, metrics):
        del metrics
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    train.run(config, workdir, on_step_end=on_step_end)


if __name__ == "__main__":
    main()
