"""Launch scripts: shellcheck, --help, --dry-run, and the commands they run, against fake gcloud,
sbatch, srun, scontrol and python executables that record their arguments and environment."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")
SCRIPTS = [
    "tpu_create.sh",
    "tpu_setup.sh",
    "tpu_run.sh",
    "tpu_logs.sh",
    "tpu_delete.sh",
    "tpu_worker.sh",
    "slurm_gpu.sbatch",
]
SLICE = ["--name=my-pod", "--zone=us-west4-a", "--project=my-proj"]
LOCATION = ["--zone=us-west4-a", "--project=my-proj"]

_FAKE = """#!{python}
import json, os, subprocess, sys
name = os.path.basename(sys.argv[0])
env = {{k: v for k, v in os.environ.items() if k.startswith(("JAX_", "SLURM_PROCID", "TPU_WORKER_ID"))}}
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"prog": name, "argv": sys.argv[1:], "env": env}}) + "\\n")
if name == "gcloud" and "describe" in sys.argv:
    print("ACTIVE")
if name == "scontrol":
    print("node01\\nnode02")
if name == "srun":  # run one task of the step, as task 3 on its node's GPU 3
    command = sys.argv[1:]
    while command[0].startswith("--"):
        command = command[1:]
    sys.exit(subprocess.run(command, env=dict(os.environ, SLURM_PROCID="3", SLURM_LOCALID="3")).returncode)
"""


@pytest.fixture
def fakes(tmp_path):
    """A PATH with fake gcloud, sbatch, srun, scontrol; `calls()` returns what they recorded."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for prog in ("gcloud", "sbatch", "srun", "scontrol", "python-fake"):
        path = bin_dir / prog
        path.write_text(_FAKE.format(python=sys.executable))
        path.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(log), TMPDIR=str(tmp_path))
    for var in list(env):
        if var.startswith(("TPU_", "SLURM_", "JAX_")):
            del env[var]

    class Fakes:
        bin = bin_dir

        @staticmethod
        def run(script, *args, check=True, **extra_env):
            done = subprocess.run(
                ["bash", os.path.join(LAUNCH, script), *args],
                capture_output=True,
                text=True,
                timeout=60,
                env=dict(env, **extra_env),
                cwd=extra_env.get("HOME", REPO),
            )
            if check:
                assert done.returncode == 0, done.stderr
            return done

        @staticmethod
        def calls(prog=None):
            if not log.exists():
                return []
            lines = [json.loads(x) for x in log.read_text().splitlines()]
            return [x for x in lines if prog is None or x["prog"] == prog]

    return Fakes()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="no shellcheck (apt-get install shellcheck)")
def test_shellcheck_passes():
    done = subprocess.run(
        ["shellcheck", "-x", *[os.path.join("launch", s) for s in SCRIPTS], "launch/_tpu_common.sh"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(fakes, script):
    out = fakes.run(script, "--help").stdout
    assert out.startswith("Usage") and "--dry-run" in out
    assert fakes.calls() == []


def test_create_queues_the_slice_and_waits_until_active(fakes):
    args = [*SLICE, "--accelerator-type=v5litepod-16", "--spot", "--valid-until=6h", "--poll-seconds=0"]
    dry = fakes.run("tpu_create.sh", *args, "--dry-run").stdout
    assert fakes.calls() == []
    assert (
        "+ gcloud compute tpus queued-resources create my-pod --node-id=my-pod --zone=us-west4-a "
        "--project=my-proj --accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot "
        "--valid-until-duration=6h"
    ) in dry
    out = fakes.run("tpu_create.sh", *args).stdout
    create, describe = fakes.calls("gcloud")
    assert create["argv"] == [
        "compute",
        "tpus",
        "queued-resources",
        "create",
        "my-pod",
        "--node-id=my-pod",
        *LOCATION,
        "--accelerator-type=v5litepod-16",
        "--runtime-version=v2-alpha-tpuv5-lite",
        "--spot",
        "--valid-until-duration=6h",
    ]
    assert describe["argv"][3:5] == ["describe", "my-pod"] and "my-pod: ACTIVE" in out


def test_create_reserved_and_required_flags(fakes):
    fakes.run("tpu_create.sh", *SLICE, "--accelerator-type=v4-32", "--reserved", "--no-wait")
    (create,) = fakes.calls("gcloud")
    assert "--reserved" in create["argv"] and "--runtime-version=tpu-ubuntu2204-base" in create["argv"]
    missing = fakes.run("tpu_create.sh", "--name=my-pod", "--accelerator-type=v4-32", check=False)
    assert missing.returncode == 2 and "--zone is required" in missing.stderr
    bad = fakes.run("tpu_create.sh", *SLICE, "--accelerator-typo=v4-32", check=False)
    assert bad.returncode == 2 and "unknown argument '--accelerator-typo=v4-32'" in bad.stderr


def test_setup_ships_the_repo_and_installs_pinned_dependencies_on_all_workers(fakes, tmp_path):
    data = tmp_path / "math_files"
    data.mkdir()
    fakes.run("tpu_setup.sh", *SLICE, f"--stage={data}", "--stage=gs://my-bucket/gemma-2-2b-it")
    tarball = tmp_path / "score_jax-my-pod.tar.gz"
    assert tarball.stat().st_size > 0  # git archive of HEAD
    scp, install, stage_local, stage_gs = fakes.calls("gcloud")
    assert scp["argv"] == [
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        str(tarball),
        "my-pod:score_jax.tar.gz",
        *LOCATION,
        "--worker=all",
    ]
    assert install["argv"][:8] == ["compute", "tpus", "tpu-vm", "ssh", "my-pod", *LOCATION, "--worker=all"]
    command = install["argv"][8]
    assert command.startswith("--command=set -e")
    assert "pip install -q -r ~/score_jax/launch/requirements-tpu.txt" in command
    assert "python3.11 -m venv ~/score_jax_venv" in command and "pip install -q --no-deps -e ~/score_jax" in command
    copy = "gcloud storage cp --recursive gs://my-bucket/gemma-2-2b-it ~/score_jax_files/"
    assert stage_gs["argv"][7:] == ["--worker=all", f"--command={copy}"]
    assert stage_local["argv"] == [
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        "--recurse",
        str(data),
        "my-pod:score_jax_files/",
        *LOCATION,
        "--worker=all",
    ]


def test_pinned_requirements_cover_setup_cfg():
    pins = {
        line.split("==")[0].split("[")[0].lower().replace("_", "-")
        for line in pathlib.Path(LAUNCH, "requirements-tpu.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    needed = [
        line.strip()
        for line in cfg["options"]["install_requires"].splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    names = {n.split(">")[0].split("=")[0].split("<")[0].split("[")[0].lower().replace("_", "-") for n in needed}
    assert names <= pins, names - pins


def _worker_home(tmp_path, fakes):
    """A worker's home directory: the repository unpacked and a virtual environment's python."""
    home = tmp_path / "home"
    (home / "score_jax_venv" / "bin").mkdir(parents=True)
    os.symlink(REPO, home / "score_jax")
    shutil.copy(fakes.bin / "python-fake", home / "score_jax_venv" / "bin" / "python")
    return home


def test_run_starts_the_config_on_all_workers_with_checkpoints_in_the_bucket(fakes, tmp_path):
    fakes.run(
        "tpu_run.sh",
        *SLICE,
        "--config=configs/stage2_math.py",
        "--bucket=gs://my-bucket/runs/a/",
        "--foreground",
        "--",
        "--config.model.hf_checkpoint=score_jax_files/gemma-2-2b-it",
        "--config.rl.alpha=5",
    )
    (ssh,) = fakes.calls("gcloud")
    assert ssh["argv"][:8] == ["compute", "tpus", "tpu-vm", "ssh", "my-pod", *LOCATION, "--worker=all"]
    command = ssh["argv"][8].removeprefix("--command=")
    assert command.split() == [
        "bash",
        "score_jax/launch/tpu_worker.sh",
        "--run=stage2_math",
        "--config=configs/stage2_math.py",
        "--bucket=gs://my-bucket/runs/a",
        "--foreground",
        "--",
        "--config.model.hf_checkpoint=score_jax_files/gemma-2-2b-it",
        "--config.rl.alpha=5",
    ]

    # What each worker then does with that command.
    home = _worker_home(tmp_path, fakes)
    workdir = home / "score_jax_runs" / "stage2_math"
    for worker in ("0", "1"):
        env = dict(
            os.environ,
            HOME=str(home),
            TPU_WORKER_ID=worker,
            FAKE_LOG=str(tmp_path / f"w{worker}"),
            PATH=f"{fakes.bin}:{os.environ['PATH']}",
        )
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, cwd=home, env=env)
        assert done.returncode == 0, done.stderr
        calls = [json.loads(x) for x in (tmp_path / f"w{worker}").read_text().splitlines()]
        main = [c for c in calls if c["prog"] == "python"]
        assert [c["argv"] for c in main] == [
            [
                "-m",
                "score_jax.main",
                f"--config={home}/score_jax/configs/stage2_math.py",
                f"--workdir={workdir}",
                "--config.checkpoint.directory=gs://my-bucket/runs/a/checkpoints",
                "--config.model.hf_checkpoint=score_jax_files/gemma-2-2b-it",
                "--config.rl.alpha=5",
            ]
        ]
        syncs = [c["argv"] for c in calls if c["prog"] == "gcloud"]
        if worker == "0":  # worker 0 pulls the run's earlier metrics and pushes the workdir at the end
            assert syncs == [
                ["storage", "rsync", "--recursive", "gs://my-bucket/runs/a/workdir", str(workdir)],
                ["storage", "rsync", "--recursive", str(workdir), "gs://my-bucket/runs/a/workdir"],
            ]
        else:
            assert syncs == []


def test_worker_detaches_and_logs(fakes, tmp_path):
    home = _worker_home(tmp_path, fakes)
    done = fakes.run(
        "tpu_worker.sh",
        "--run=r1",
        "--config=configs/stage2_math.py",
        "--bucket=gs://b/r1",
        HOME=str(home),
        TPU_WORKER_ID="1",
    )
    log = home / "score_jax_runs" / "r1" / "worker_1.log"
    assert "worker 1: started" in done.stdout and str(log) in done.stdout
    deadline = time.monotonic() + 30
    while "exited with status 0" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the detached worker did not finish"
        time.sleep(0.2)
    assert [c["prog"] for c in fakes.calls()] == ["python"]


def test_run_refuses_a_missing_bucket_or_config(fakes):
    no_bucket = fakes.run("tpu_run.sh", *SLICE, "--config=configs/stage2_math.py", check=False)
    assert no_bucket.returncode == 2 and "--bucket=gs://BUCKET/PATH is required" in no_bucket.stderr
    no_config = fakes.run("tpu_run.sh", *SLICE, "--config=configs/nope.py", "--bucket=gs://b/r", check=False)
    assert no_config.returncode == 2 and "not a file of this repository" in no_config.stderr
    assert fakes.calls() == []


def test_logs_stream_and_fetch(fakes, tmp_path):
    fakes.run("tpu_logs.sh", *SLICE, "--run=r1", "--follow")
    fakes.run("tpu_logs.sh", *SLICE, "--run=r1", f"--fetch={tmp_path / 'out'}")
    follow, cat, scp = fakes.calls("gcloud")
    assert follow["argv"][5:] == [*LOCATION, "--worker=0", "--command=tail -n +1 -F score_jax_runs/r1/worker_*.log"]
    assert cat["argv"][5:] == [
        *LOCATION,
        "--worker=all",
        "--command=cat score_jax_runs/r1/worker_*.log",
        f"--output-directory={tmp_path / 'out' / 'logs'}",
    ]
    assert (tmp_path / "out" / "logs").is_dir()
    assert scp["argv"] == [
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        "--recurse",
        "my-pod:score_jax_runs/r1",
        f"{tmp_path / 'out'}/",
        *LOCATION,
        "--worker=0",
    ]


def test_delete_tears_the_slice_down(fakes):
    dry = fakes.run("tpu_delete.sh", *SLICE, "--dry-run").stdout
    assert "+ gcloud compute tpus queued-resources delete my-pod" in dry
    assert fakes.calls() == []
    fakes.run("tpu_delete.sh", *SLICE)
    (delete,) = fakes.calls("gcloud")
    assert delete["argv"] == [
        "compute",
        "tpus",
        "queued-resources",
        "delete",
        "my-pod",
        *LOCATION,
        "--force",
        "--quiet",
    ]


_SLURM_ARGS = [
    "--config=configs/stage2_math.py",
    "--workdir=/shared/runs/a",
    "--nodes=2",
    "--gpus-per-node=8",
    "--partition=gpu",
    "--time=24:00:00",
]


def test_slurm_submits_itself(fakes):
    assert "+ sbatch --nodes=2" in fakes.run("slurm_gpu.sbatch", *_SLURM_ARGS, "--dry-run").stdout
    assert fakes.calls() == []
    fakes.run("slurm_gpu.sbatch", *_SLURM_ARGS, "--", "--config.rl.alpha=5")
    (sbatch,) = fakes.calls("sbatch")
    assert sbatch["argv"] == [
        "--nodes=2",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--partition=gpu",
        "--time=24:00:00",
        os.path.join(LAUNCH, "slurm_gpu.sbatch"),
        *_SLURM_ARGS,
        "--",
        "--config.rl.alpha=5",
    ]
    fakes.run("slurm_gpu.sbatch", *_SLURM_ARGS, "--per-node")
    assert fakes.calls("sbatch")[1]["argv"][:3] == ["--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8"]


@pytest.mark.parametrize("per_node", [False, True])
def test_slurm_job_runs_one_process_per_task_with_the_coordinator_from_slurm(fakes, per_node):
    job = dict(SLURM_JOB_ID="1234", SLURM_JOB_NODELIST="node[01-02]", SLURM_NTASKS="2" if per_node else "16")
    args = [*_SLURM_ARGS, f"--python={fakes.bin / 'python-fake'}"] + (["--per-node"] if per_node else [])
    out = fakes.run("slurm_gpu.sbatch", *args, "--", "--config.rl.alpha=5", **job).stdout
    assert "coordinator node01:21234" in out
    (srun,) = fakes.calls("srun")
    assert srun["argv"][:2] == ["--kill-on-bad-exit=1", f"--ntasks-per-node={1 if per_node else 8}"]
    (task,) = fakes.calls("python-fake")  # the fake srun ran task 3
    assert task["argv"] == [
        "-m",
        "score_jax.main",
        "--config=configs/stage2_math.py",
        "--workdir=/shared/runs/a",
        "--config.rl.alpha=5",
    ]
    assert task["env"] == {
        "JAX_COORDINATOR_ADDRESS": "node01:21234",
        "JAX_NUM_PROCESSES": job["SLURM_NTASKS"],
        "JAX_PROCESS_ID": "3",
        "JAX_LOCAL_DEVICE_IDS": "0,1,2,3,4,5,6,7" if per_node else "3",
        "SLURM_PROCID": "3",
    }
