"""Find and load lm-eval tasks: our YAMLs, the built-ins we use, and the offline mini copies of both.

``task_manager()`` indexes only ``eval/tasks/`` and the built-in folders the benchmarks need (0.1 s instead of
~6 s for all 14,000 built-in tasks). ``task_spec()`` returns what ``lm_eval.simple_evaluate(tasks=[...])`` takes:
the task name, or, with ``local_data``, the real task definition (prompt, few-shot, filters, metric, as lm-eval
resolves it) with only the dataset swapped for ``<local_data>/<benchmark>/<leaf task>.jsonl`` given by absolute
path (``data_files`` would otherwise resolve against the working directory). A group keeps the members that have
a local file and its own aggregation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from eval.benchmarks import Benchmark

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
SHARED_TASK_MODULES = ("execution.py", "lmeval_source.py")
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def task_dir(benchmark: Benchmark) -> Path:
    """The folder holding the benchmark's task YAML (and utils)."""
    if benchmark.source == "lm-eval":
        return lm_eval_tasks_dir() / benchmark.builtin_dir
    return TASKS_DIR / _OUR_DIRS[benchmark.task]


_OUR_DIRS = {
    "mio_humaneval": "humaneval",
    "mio_leetcode": "leetcode",
    "mio_math": "math_minerva",
    "mio_theoremqa": "theoremqa",
    "mio_svamp": "svamp",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_files(benchmark: Benchmark) -> dict:
    """A digest of the files that define the benchmark's task, so that editing a prompt invalidates old results.

    Returns {"dir": the task folder (relative to lm_eval/tasks or eval/tasks), "files": how many, "sha256": digest
    over their names and contents}; our tasks also cover the shared modules they import.
    """
    folder = task_dir(benchmark)
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and (p.suffix in (".yaml", ".py") or p.name.endswith("_yaml"))
    ]
    if benchmark.source == "ours":
        files += [TASKS_DIR / name for name in SHARED_TASK_MODULES]
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}\0{_sha256(p)}\n".encode())
    root = TASKS_DIR if benchmark.source == "ours" else lm_eval_tasks_dir()
    return {"dir": str(folder.relative_to(root)), "files": len(files), "sha256": digest.hexdigest()}


def local_files(local_data: str | Path, benchmark: Benchmark) -> dict[str, str]:
    """sha256 of the local copies used for ``benchmark`` ({file name: digest})."""
    folder = Path(local_data) / benchmark.name
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"{benchmark.name}: no local data in {folder} (expected <leaf task>.jsonl files)"
        )
    return {p.name: _sha256(p) for p in files}


def task_manager(benchmarks: list[Benchmark], task_names: list[str]):
    """A TaskManager over eval/tasks and the needed built-in folders; all built-ins if a name is still missing."""
    from lm_eval.tasks import TaskManager

    dirs = [TASKS_DIR] + sorted({lm_eval_tasks_dir() / b.builtin_dir for b in benchmarks if b.builtin_dir})
    tm = TaskManager(include_path=[str(d) for d in dirs], include_defaults=False)
    if all(name in tm.all_tasks for name in task_names):
        return tm
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=True)


def _local_dataset(cfg: dict, data_file: Path) -> dict:
    splits = {cfg[k] for k in SPLIT_KEYS if cfg.get(k)}
    return {
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(data_file.resolve()) for split in sorted(splits)}},
    }


def _task_config(tm, name: str) -> dict:
    """A task's full definition (includes merged, ``!function`` resolved), as lm-eval would build it."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(tm.task_index[name].yaml_path, resolve_func=True, recursive=True)
    for key in ("tag", "group"):
        cfg.pop(key, None)
    return cfg


def _local_group(tm, yaml_path: Path, folder: Path):
    """The group with the members that have a local file, each over that file; the group's own aggregation.

    Built as a ``Group`` object because lm-eval 0.4.13 passes an inline group dict's own keys down to its members.
    """
    from lm_eval.api.group import Group
    from lm_eval.config.group import GroupConfig
    from lm_eval.tasks._factory import GROUP_FIELD_NAMES
    from lm_eval.tasks._yaml_loader import load_yaml

    raw = load_yaml(yaml_path, resolve_func=True, recursive=True)
    shared = {k: v for k, v in raw.items() if k not in GROUP_FIELD_NAMES}  # group-level task overrides
    members = [c for c in raw["task"] if isinstance(c, str) and (folder / f"{c}.jsonl").exists()]
    if not members:
        raise FileNotFoundError(f"no local file for any member of group {raw['group']} in {folder}")
    group = Group.from_config(
        GroupConfig(**{**{k: v for k, v in raw.items() if k in GROUP_FIELD_NAMES}, "task": members})
    )
    for name in members:
        cfg = {**_task_config(tm, name), **shared}
        cfg.update(_local_dataset(cfg, folder / f"{name}.jsonl"))
        group.add(tm.load([cfg])["tasks"][name])
    return group


def task_spec(tm, benchmark: Benchmark, task: str, local_data: str | Path | None):
    """``task`` as lm-eval should load it: its name, or its definition over the local copy of its data."""
    if local_data is None:
        return task
    from lm_eval.tasks._index import Kind

    folder = Path(local_data) / benchmark.name
    entry = tm.task_index.get(task)
    if entry is None or entry.yaml_path is None:
        raise KeyError(f"{benchmark.name}: task {task!r} has no YAML definition to run on local data")
    if entry.kind is Kind.GROUP:
        return _local_group(tm, entry.yaml_path, folder)
    data_file = folder / f"{task}.jsonl"
    if not data_file.exists():
        raise FileNotFoundError(f"{benchmark.name}: no local file {data_file}")
    cfg = _task_config(tm, task)
    return {**cfg, **_local_dataset(cfg, data_file)}
