"""The package's shape: no import cycles, and checkpoints written by earlier layouts still restore."""

import ast
import pathlib
import shutil

import numpy as np

PACKAGE = pathlib.Path(__file__).parent.parent / "score_jax"
FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the score_jax modules it imports (at top level or inside functions)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}

    def resolve(name: str) -> str | None:
        while name and name not in files:  # `from score_jax.x import f`: f is not a module
            name = name.rpartition(".")[0]
        return name or None

    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                module = resolve(target) if target.startswith("score_jax") else None
                if module and module != name and not name.startswith(module + "."):
                    graph[name].add(module)  # a module importing its own package's __init__ is not a cycle
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_import_graph_has_no_cycle():
    graph = _import_graph()
    assert "score_jax.run_setup" in graph["score_jax.train"]  # the graph is real, not empty
    assert _cycles(graph) == []


def test_cycle_detection_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_checkpoint_written_before_run_setup_restores(tmp_path):
    # Written by commit c7c1b51 (before run set-up moved out of the trainer): a tiny run's step 2 of
    # "stage1:1,stage2:1". Today's trainer must resume from it and run only the steps after it.
    import jax
    import ml_collections

    from score_jax import config as config_lib
    from score_jax import run_setup, train
    from score_jax.checkpoints import manager
    from score_jax.rl import train_step

    c = config_lib.base_config()
    c.model.preset = "tiny_llama"
    c.model.overrides = ml_collections.ConfigDict(
        dict(vocab_size=261, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, mlp_dim=32)
    )
    c.mesh.shape = (1, -1, 1)
    c.rl.schedule = "stage1:1,stage2:2"  # one step more than the checkpoint holds
    c.rl.prompts_per_step, c.rl.samples_per_prompt, c.rl.max_new_tokens = 2, 4, 4
    c.rl.prompt_buckets = (32, 64)
    c.data.synthetic_size = 16
    c.eval.num_examples, c.eval.batch_size = 4, 8
    c.checkpoint.every_steps, c.checkpoint.max_to_keep, c.checkpoint.async_save = 1, 1, False
    c.optim.warmup_steps = 1
    shutil.copytree(FIXTURES / "checkpoints" / "before_run_setup", tmp_path / "checkpoints")
    seen = []
    result = train.run(c, str(tmp_path), on_step_end=lambda step, _: seen.append(step))
    assert seen == [3]
    # It went on from the fixture's step-2 parameters: one more small step away from them.
    setup = run_setup.build(c, str(tmp_path))
    abstract = manager.abstract_like(train_step.init_train_state(setup.params, run_setup.optimizer(c)))
    step, old, extra = manager.restore_from_path(str(FIXTURES / "checkpoints" / "before_run_setup"), abstract)
    assert step == 2 and extra["stage"] == "stage2" and "data" in extra
    assert int(result.state.step) == 3
    moved = [
        np.abs(np.asarray(a) - np.asarray(b)).max()
        for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(old.params))
    ]
    assert 0 < max(moved) < 1e-3
