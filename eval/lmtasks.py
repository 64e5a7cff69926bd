"""Find and load lm-eval tasks: our YAMLs, the built-ins we use, with their data pinned or swapped for local files.

``task_manager()`` indexes only ``eval/tasks/`` and the built-in folders the benchmarks need (0.1 s instead of
~6 s for all 14,000 built-in tasks). ``task_spec()`` returns what ``lm_eval.simple_evaluate(tasks=[...])`` takes:
the task's full definition (prompt, few-shot, filters, metric, as lm-eval resolves it) with only its dataset
changed: the benchmark's pinned hub revision (``dataset_kwargs.revision``), or a local file given by absolute path
(``data_files`` would otherwise resolve against the working directory): ``<local_data>/<benchmark>/<leaf task>.jsonl``
for the mini copies (the folder of the table row that defines the task), or a preset entry's ``data_file`` for data
that is not on the hub. A group keeps its own
aggregation and each member gets the same change (with local data: the members that have a local file).
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

from eval import benchmarks as bm
from eval.benchmarks import Benchmark

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
SHARED_TASK_MODULES = ("execution.py", "final_answer.py", "lmeval_source.py")
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
_NAME_LINE = re.compile(r"^(?:task|group):\s*([A-Za-z0-9_.-]+)\s*$", re.MULTILINE)


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@functools.cache
def our_task_dirs() -> dict[str, Path]:
    """{task or group name: its folder} for every YAML under eval/tasks/ (the mini copies excluded)."""
    found = {}
    for path in sorted(TASKS_DIR.glob("*/*")):
        if path.parent.name == "mini" or not (path.suffix == ".yaml" or path.name.endswith("_yaml")):
            continue
        for name in _NAME_LINE.findall(path.read_text()):
            found.setdefault(name, path.parent)
    return found


def task_dir(benchmark: Benchmark, task: str | None = None) -> Path:
    """The folder holding the task's YAML (and utils); ``task`` defaults to the benchmark's plain-protocol task."""
    if benchmark.source == "lm-eval":
        return lm_eval_tasks_dir() / benchmark.builtin_dir
    task = task or benchmark.task
    try:
        return our_task_dirs()[task]
    except KeyError:
        raise KeyError(f"{benchmark.name}: no YAML under {TASKS_DIR} defines task {task!r}") from None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_files(benchmark: Benchmark, task: str | None = None) -> dict:
    """A digest of the files that define the task, so that editing a prompt invalidates old results.

    Returns {"dir": the task folder (relative to lm_eval/tasks or eval/tasks), "files": how many, "sha256": digest
    over their names and contents}; our tasks also cover the shared modules they import.
    """
    folder = task_dir(benchmark, task)
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and (p.suffix in (".yaml", ".py") or p.name.endswith("_yaml"))
    ]
    if benchmark.source == "ours":
        files += [TASKS_DIR / name for name in SHARED_TASK_MODULES]
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}\0{file_sha256(p)}\n".encode())
    root = TASKS_DIR if benchmark.source == "ours" else lm_eval_tasks_dir()
    return {"dir": str(folder.relative_to(root)), "files": len(files), "sha256": digest.hexdigest()}


def local_files(local_data: str | Path, benchmark: Benchmark) -> dict[str, str]:
    """sha256 of the local copies of ``benchmark``'s data ({file name: digest})."""
    folder = Path(local_data) / benchmark.name
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"{benchmark.name}: no local data in {folder} (expected <leaf task>.jsonl files)"
        )
    return {p.name: file_sha256(p) for p in files}


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


def _pinned_dataset(cfg: dict, revision: str) -> dict:
    return {"dataset_kwargs": {**(cfg.get("dataset_kwargs") or {}), "revision": revision}}


def _task_config(tm, name: str) -> dict:
    """A task's full definition (includes merged, ``!function`` resolved), as lm-eval would build it."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(tm.task_index[name].yaml_path, resolve_func=True, recursive=True)
    for key in ("tag", "group"):
        cfg.pop(key, None)
    return cfg


def _build_group(tm, raw: dict, configs: list[dict]):
    """A ``Group`` over the member configs, with the group's own aggregation.

    Built as a ``Group`` object because lm-eval 0.4.13 passes an inline group dict's own keys down to its members.
    """
    from lm_eval.api.group import Group
    from lm_eval.config.group import GroupConfig
    from lm_eval.tasks._factory import GROUP_FIELD_NAMES

    names = [c["task"] for c in configs]
    group = Group.from_config(
        GroupConfig(**{**{k: v for k, v in raw.items() if k in GROUP_FIELD_NAMES}, "task": names})
    )
    for cfg in configs:
        group.add(tm.load([cfg])["tasks"][cfg["task"]])
    return group


def task_configs(
    tm,
    benchmark: Benchmark,
    task: str,
    local_data: str | Path | None = None,
    data_file: str | Path | None = None,
) -> tuple[dict | None, list[dict]]:
    """(the group's own definition or None, the config of each task to run), each config's dataset changed: over
    the local copy of its data (``local_data``: the mini copies' folder; ``data_file``: one file for the whole
    task), else over its dataset at the benchmark's pinned revision. Nothing is loaded or downloaded."""
    from lm_eval.tasks._factory import GROUP_FIELD_NAMES
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = tm.task_index.get(task)
    if entry is None or entry.yaml_path is None:
        raise KeyError(f"{benchmark.name}: task {task!r} has no YAML definition")
    row = bm.owner(task) or benchmark  # a preset entry may run another row's task (leetcode -> the Eurus set)
    folder = Path(local_data) / row.name if local_data is not None else None
    if folder is None and data_file is None and row.local_only:
        raise FileNotFoundError(
            f"{benchmark.name} reads a local file, not the hub: give its path as "
            f"benchmarks.suite.{benchmark.name}.data_file (eval/README.md says where to get it)"
        )
    if data_file is not None and not Path(data_file).is_file():
        raise FileNotFoundError(f"{benchmark.name}: data_file {data_file} does not exist")

    def local_file(name: str) -> Path:
        """<folder>/<leaf task>.jsonl; a task variant over the same data (HumanEval's instruct) reads the
        file of the row's plain-protocol task."""
        own = folder / f"{name}.jsonl"
        return own if own.exists() or name != task else folder / f"{row.task}.jsonl"

    def with_data(cfg: dict) -> dict:
        if folder is not None:
            return {**cfg, **_local_dataset(cfg, local_file(cfg["task"]))}
        if data_file is not None:
            return {**cfg, **_local_dataset(cfg, Path(data_file))}
        return {**cfg, **_pinned_dataset(cfg, row.revision)} if row.revision else cfg

    if entry.kind is not Kind.GROUP:
        if folder is not None and not local_file(task).exists():
            raise FileNotFoundError(f"{benchmark.name}: no local file {local_file(task)}")
        return None, [with_data(_task_config(tm, task))]
    raw = load_yaml(entry.yaml_path, resolve_func=True, recursive=True)
    shared = {k: v for k, v in raw.items() if k not in GROUP_FIELD_NAMES}  # group-level task overrides
    names = [c for c in raw["task"] if isinstance(c, str)]
    if folder is not None:
        names = [n for n in names if (folder / f"{n}.jsonl").exists()]
        if not names:
            raise FileNotFoundError(f"no local file for any member of group {task} in {folder}")
    return raw, [with_data({**_task_config(tm, n), **shared}) for n in names]


def task_spec(
    tm,
    benchmark: Benchmark,
    task: str,
    local_data: str | Path | None = None,
    data_file: str | Path | None = None,
):
    """What ``lm_eval.simple_evaluate(tasks=[...])`` takes for ``task``: its config, or a group object, with the
    dataset changes of ``task_configs``."""
    group, configs = task_configs(tm, benchmark, task, local_data, data_file)
    return configs[0] if group is None else _build_group(tm, group, configs)
