"""Evaluate one checkpoint on a preset of benchmarks through lm-eval's Python API, with cached, resumable results.

``run(cfg)`` is what ``eval/run.py``, the end of a training run and tests call. The checkpoint is ``cfg.checkpoint``
(``eval/run.py model=<name>`` sets it to the model config's folder first: ``pipeline.evaluate``). The prompt
protocol (``prompt.protocol``: chat or plain) picks each benchmark's task variant and how prompts are rendered. For
each benchmark of the preset, in order: build the settings that determine its result (checkpoint content hash, task
files, data and its pinned revision, protocol and generation settings, seeds, lm-eval version), skip it if
``<benchmark>.json`` already holds a result with the same settings hash, else run it and write the result
atomically. A benchmark runs through lm-eval's public interface: its tasks pointed at their data by
``include:`` overlay YAMLs in ``<preset>/tasks/<benchmark>/`` (``eval.lmtasks``), its requests in lm-eval's request
cache (``<preset>/requests/``: a killed benchmark resumes at the first unanswered request), lm-eval's own result and
sample files written to ``<preset>/lm_eval/`` beside ours. The model is loaded once, and only if some benchmark
needs computing; a rerun with unchanged settings loads nothing and writes nothing. ``summary.json`` holds each
benchmark's primary score and the preset average (``eval.benchmarks.average``). Layout: eval/README.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from common.fingerprint import fingerprint
from common.net import free_port
from common.records import shown_path
from eval import benchmarks as bm
from eval import lmtasks
from eval.config import PROTOCOLS, SPEED_ONLY_BACKEND_KEYS  # the schema's runtime-only backend fields
from eval.results import (
    SCHEMA,
    SUMMARY_SCHEMA,
    dumps,
    is_complete,
    read_json,
    sample_task_hashes,
    settings_hash,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")


def preset_benchmarks(cfg: DictConfig) -> list[tuple[bm.Benchmark, dict]]:
    """(table row, the preset's entry for it) for each benchmark of the preset, in the preset's order."""
    suite = OmegaConf.to_container(cfg.benchmarks.suite, resolve=True)
    if not suite:
        raise ValueError(f"preset {cfg.benchmarks.name!r} lists no benchmarks")
    return [(bm.get(name), entry or {}) for name, entry in suite.items()]


def check(cfg: DictConfig, chosen: list[tuple[bm.Benchmark, dict]]) -> None:
    """Fail before any work on settings that cannot run."""
    if cfg.backend.name not in BACKENDS:
        raise ValueError(f"backend.name={cfg.backend.name!r}; choose one of {BACKENDS}")
    code = [b.name for b, _ in chosen if b.code]
    if code and not cfg.unsafe_code:
        raise PermissionError(
            f"{', '.join(code)} execute model-written code. Allow it with unsafe_code=true (each program runs in a "
            f"subprocess with a {cfg.code_timeout_s} s limit; use a container for untrusted models), or leave them "
            f"out: {' '.join('~benchmarks.suite.' + n for n in code)}"
        )
    if cfg.prompt.protocol not in PROTOCOLS:
        raise ValueError(f"prompt.protocol={cfg.prompt.protocol!r}; choose one of {PROTOCOLS}")
    if cfg.prompt.chat_template is not None and cfg.prompt.protocol != "chat":
        raise ValueError("prompt.chat_template names a chat template: it needs prompt.protocol=chat")
    for bench, entry in chosen:
        row = bm.owner(benchmark_task(cfg, bench, entry)) or bench
        if row.local_only and not cfg.benchmarks.local_data and not entry.get("data_file"):
            raise FileNotFoundError(
                f"{bench.name} runs {row.name}, whose data is not on the hub: give the local file as "
                f"benchmarks.suite.{bench.name}.data_file (where to get it: eval/README.md, {row.note})"
            )
    if cfg.benchmarks.local_data and not Path(cfg.benchmarks.local_data).is_dir():
        raise FileNotFoundError(f"benchmarks.local_data={cfg.benchmarks.local_data} is not a folder")


def gen_kwargs(cfg: DictConfig, entry: dict) -> dict[str, Any]:
    """Generation overrides, later wins: preset-wide, the benchmark's entry, then the top-level ``generation``."""
    merged = dict(OmegaConf.to_container(cfg.benchmarks.gen_kwargs, resolve=True))
    merged.update(entry.get("gen_kwargs") or {})
    merged.update(
        {k: v for k, v in OmegaConf.to_container(cfg.generation, resolve=True).items() if v is not None}
    )
    return merged


def protocol(cfg: DictConfig) -> dict:
    """The prompt protocol as lm-eval's switches: chat = the tokenizer's chat template, few-shot examples as turns."""
    chat = cfg.prompt.protocol == "chat"
    return {
        "name": cfg.prompt.protocol,
        "apply_chat_template": (cfg.prompt.chat_template or True) if chat else False,
        "fewshot_as_multiturn": chat,
        "system_instruction": cfg.prompt.system_instruction,
    }


def benchmark_task(cfg: DictConfig, bench: bm.Benchmark, entry: dict) -> str:
    """The task a benchmark runs: the preset entry's override, else the table's task for the protocol."""
    return entry.get("task") or bench.task_for(cfg.prompt.protocol)


def common_settings(cfg: DictConfig, checkpoint: dict) -> dict:
    """Settings shared by all benchmarks of a run that can change a score (hashed into every result's key)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    return {
        "checkpoint": checkpoint["content_hash"],
        "tokenizer": c["tokenizer"],
        "backend": {k: v for k, v in c["backend"].items() if k not in SPEED_ONLY_BACKEND_KEYS},
        "prompt": protocol(cfg),
        "seeds": c["seeds"],
        "limit": c["limit"],
        "bootstrap_iters": c["bootstrap_iters"],
        "lm_eval_version": version("lm_eval"),
    }


def data_source(cfg: DictConfig, bench: bm.Benchmark, entry: dict, task: str) -> dict:
    """What the task reads: the mini copies, a local data file, or the hub dataset at its pinned revision."""
    local, data_file = cfg.benchmarks.local_data, entry.get("data_file")
    bench = (
        bm.owner(task) or bench
    )  # the row that defines the task (a preset entry may run another row's task)
    if local:
        return {
            "kind": "local",
            "path": shown_path(Path(local) / bench.name),
            "files": lmtasks.local_files(local, bench),
        }
    if data_file:
        path = Path(data_file).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"benchmarks.suite.{bench.name}.data_file={data_file}: no such file")
        return {
            "kind": "file",
            "path": shown_path(path),
            "sha256": lmtasks.file_sha256(path),
            "split": bench.split,
        }
    return {
        "kind": "hub",
        "path": bench.dataset,
        "revision": bench.revision,
        "split": bench.split,
        "items": bench.items,
    }


def benchmark_settings(cfg: DictConfig, bench: bm.Benchmark, entry: dict, task: str) -> dict:
    defining = bm.owner(task)
    return {
        "name": bench.name,
        "task": task,
        "primary": bench.key,
        "num_fewshot": entry.get("num_fewshot"),
        "gen_kwargs": gen_kwargs(cfg, entry),
        "task_files": lmtasks.task_files(defining, task) if defining else None,
        "data": data_source(cfg, bench, entry, task),
        "code_timeout_s": cfg.code_timeout_s if bench.code else None,
    }


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(cfg: DictConfig, commit: str | None = None):
    """The lm-eval model for ``cfg.checkpoint``: HFLM or vLLM, with ``backend.model_args`` passed through.

    ``commit``: for a hub checkpoint, the commit its revision resolved to when it was hashed, loaded instead of the
    (movable) branch or tag name so that the weights evaluated are the weights recorded.
    """
    from lm_eval.api.registry import get_model

    b = cfg.backend
    args: dict[str, Any] = {
        "pretrained": cfg.checkpoint,
        "dtype": b.dtype,
        "trust_remote_code": b.trust_remote_code,
    }
    for key in ("revision", "tokenizer"):
        if cfg[key] is not None:
            args[key] = cfg[key]
    if commit:
        args["revision"] = commit
    if b.max_length is not None:
        args["max_length"] = b.max_length
    args.update(OmegaConf.to_container(b.model_args, resolve=True))
    batch = int(b.batch_size) if str(b.batch_size).isdigit() else str(b.batch_size)
    extra = {"batch_size": batch, "max_batch_size": b.max_batch_size}
    if b.name == "hf":
        extra["device"] = resolve_device(b.device)
    log.info("loading %s with the %s backend", cfg.checkpoint, b.name)
    fresh_single_process_port()
    return get_model(b.name).create_from_arg_obj(args, extra)


def fresh_single_process_port() -> None:
    """A one-process rendezvous (WORLD_SIZE=1) that this process has not used yet gets a free port: lm-eval's
    Accelerator opens a process group on MASTER_PORT, and one inherited from a parent (which set it for its own
    one-process DeepSpeed group and still holds that port) fails with EADDRINUSE."""
    import torch.distributed as dist

    if os.environ.get("WORLD_SIZE") != "1" or "MASTER_PORT" not in os.environ or dist.is_initialized():
        return
    os.environ["MASTER_PORT"] = str(free_port())


@contextlib.contextmanager
def code_execution(cfg: DictConfig, bench: bm.Benchmark):
    """The environment eval/tasks/execution.py reads, set for one code benchmark and restored afterwards."""
    if not bench.code:
        yield
        return
    timeout = None if cfg.code_timeout_s is None else str(cfg.code_timeout_s)  # None: each task's own limit
    values = {"HF_ALLOW_CODE_EVAL": "1", "MIO_CODE_TIMEOUT_S": timeout}
    if cfg.code_workers:
        values["MIO_CODE_WORKERS"] = str(cfg.code_workers)
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def task_manager_for(source_tm, cfg: DictConfig, bench: bm.Benchmark, entry: dict, task: str, out_dir: Path):
    """The TaskManager that runs ``task``: over its generated ``include:`` overlays in
    ``<out_dir>/tasks/<benchmark>/`` (data pinned or local), or ``source_tm`` where the task runs as defined."""
    files = lmtasks.overlays(source_tm, bench, task, cfg.benchmarks.local_data, entry.get("data_file"))
    if not files:
        return source_tm
    folder = lmtasks.write_overlays(
        out_dir / "tasks" / bench.name, files, f"benchmark {bench.name}, task {task}"
    )
    return lmtasks.overlay_task_manager(folder)


def request_cache(out_dir: Path, bench: bm.Benchmark, key: str) -> Path:
    """lm-eval's request cache for one benchmark under one settings hash (``use_cache``; lm-eval appends
    ``_rank<N>.db``): every answered request is stored as it comes back, so a killed run resumes mid-benchmark."""
    return out_dir / "requests" / f"{bench.name}-{key[:16]}"


def clear_request_cache(prefix: Path) -> None:
    for path in prefix.parent.glob(f"{prefix.name}_rank*.db"):
        path.unlink()


def evaluate_benchmark(
    lm, tm, cfg: DictConfig, bench: bm.Benchmark, entry: dict, task: str, cache: Path, tracker
):
    """Run one benchmark through ``lm_eval.simple_evaluate``, each request cached in ``cache`` as it is answered
    (lm-eval's ``use_cache``) and the run described to ``tracker``; return lm-eval's output dict."""
    import lm_eval
    from lm_eval.api.model import CacheHook

    kwargs = gen_kwargs(cfg, entry)
    prompt = protocol(cfg)
    s = cfg.seeds
    try:
        with code_execution(cfg, bench):
            return lm_eval.simple_evaluate(
                model=lm,
                tasks=[task],
                task_manager=tm,
                num_fewshot=entry.get("num_fewshot"),
                limit=cfg.limit,
                bootstrap_iters=cfg.bootstrap_iters,
                log_samples=True,
                use_cache=str(cache),
                evaluation_tracker=tracker,
                system_instruction=prompt["system_instruction"],
                apply_chat_template=prompt["apply_chat_template"],
                fewshot_as_multiturn=prompt["fewshot_as_multiturn"],
                gen_kwargs=kwargs or None,
                random_seed=s.random,
                numpy_random_seed=s.numpy,
                torch_random_seed=s.torch,
                fewshot_random_seed=s.fewshot,
                confirm_run_unsafe_code=bool(cfg.unsafe_code and bench.code),
            )
    finally:  # close the cache (what was answered is on disk, also after an error) and unhook it from the model
        db = getattr(getattr(lm, "cache_hook", None), "dbdict", None)
        lm.set_cache_hook(CacheHook(None))
        if db is not None:
            db.close()


def lm_eval_tracker(folder: Path, bench: bm.Benchmark):
    """lm-eval's EvaluationTracker, writing where its CLI's ``--output_path <folder>/<benchmark>.json`` would."""
    from lm_eval.loggers import EvaluationTracker

    return EvaluationTracker(output_path=str(folder / f"{bench.name}.json"))


def write_lm_eval_files(out: dict, tracker, cfg: DictConfig) -> None:
    """lm-eval's own output files, as its CLI writes them (``--output_path ... --log_samples``):
    ``<benchmark>_<time>.json`` (results, configs, task hashes, the run's description) and, with
    ``write_samples``, ``samples_<task>_<time>.jsonl`` per task."""
    tracker.general_config_tracker.model_name = str(cfg.checkpoint)
    results = {k: v for k, v in out.items() if k != "samples"}  # the tracker adds keys to what it is given
    samples = out.get("samples") if cfg.write_samples else None
    tracker.save_results_aggregated(results=results, samples=samples)
    for name in out.get("configs", {}) if samples else ():
        tracker.save_results_samples(task_name=name, samples=samples[name])


def chat_template_sha(lm, cfg: DictConfig) -> str | None:
    switch = protocol(cfg)["apply_chat_template"]
    if not switch:
        return None
    import hashlib

    template = lm.chat_template(switch) if hasattr(lm, "chat_template") else None
    return hashlib.sha256(template.encode()).hexdigest() if template else None


def dataset_commit(source: dict) -> str | None:
    """The commit a hub dataset's pinned revision resolves to now (None offline or when the hub does not answer)."""
    if source.get("kind") != "hub" or not source.get("revision"):
        return None
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return None
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(source["path"], revision=source["revision"], timeout=10).sha
    except Exception as e:  # noqa: BLE001 - any failure means: not resolvable from here; the pin is still recorded
        log.info("could not resolve %s@%s (%s)", source["path"], source["revision"], type(e).__name__)
        return None


def result_record(cfg, bench, task, out, settings, key, checkpoint, seconds, lm) -> dict:
    score = bm.primary_score(bench, out["results"], task)
    stderr = out["results"][task].get(f"{bench.metric}_stderr,{bench.filter}")
    return {
        "schema": SCHEMA,
        "benchmark": bench.name,
        "preset": cfg.benchmarks.name,
        "score": score,
        "primary": {
            "task": task,
            "metric": bench.metric,
            "filter": bench.filter,
            "key": bench.key,
            "value": score,
            "stderr": stderr if isinstance(stderr, (int, float)) else None,
        },
        "source": bench.source,
        "protocol": {**protocol(cfg), "task": task, "chat_template_sha256": chat_template_sha(lm, cfg)},
        "dataset": {
            **settings["benchmark"]["data"],
            "resolved_commit": dataset_commit(settings["benchmark"]["data"]),
        },
        "metrics": out["results"],
        "groups": out.get("groups", {}),
        "group_subtasks": out.get("group_subtasks", {}),
        "n_samples": out.get("n-samples", {}),
        "n_shot": out.get("n-shot", {}),
        "versions": out.get("versions", {}),
        "task_hashes": sample_task_hashes(out.get("samples") or {}),
        "task_configs": out.get("configs", {}),
        "checkpoint": checkpoint,
        "settings": settings,
        "settings_hash": key,
        "chat_template_sha256": chat_template_sha(lm, cfg),
        "environment": {
            "lm_eval_version": version("lm_eval"),
            "transformers_version": version("transformers"),
            "torch_version": version("torch"),
            "python": platform.python_version(),
            "repo_git_hash": out.get("git_hash"),
        },
        "model_info": {k: v for k, v in out.get("config", {}).items() if k not in ("model_args",)},
        "eval_seconds": round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def build_summary(cfg: DictConfig, chosen, records: dict[str, dict | None], checkpoint: dict) -> dict:
    scores = {b.name: (records.get(b.name) or {}).get("score") for b, _ in chosen}
    return {
        "schema": SUMMARY_SCHEMA,
        "preset": cfg.benchmarks.name,
        "checkpoint": checkpoint,
        "protocol": protocol(cfg),
        "local_data": bool(cfg.benchmarks.local_data),
        "scores": scores,
        "average": bm.average(scores),
        "average_definition": bm.AVERAGE_DEFINITION,
        "complete": all(v is not None for v in scores.values()),
        "benchmarks": {
            b.name: {
                "score": scores[b.name],
                "key": b.key,
                "task": (records.get(b.name) or {}).get("primary", {}).get("task"),
                "source": b.source,
                "file": f"{b.name}.json",
                "settings_hash": (records.get(b.name) or {}).get("settings_hash"),
            }
            for b, _ in chosen
        },
    }


def write_if_changed(path: Path, obj: dict) -> bool:
    text = dumps(obj)
    if path.exists() and path.read_text() == text:
        return False
    write_text_atomic(path, text)
    return True


def free_memory() -> None:
    """Collect a model this run loaded and dropped (matters when a training process evaluates and goes on)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` for the duration (None: leave it)."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(cfg: DictConfig, lm=None) -> dict:
    """Evaluate ``cfg.checkpoint`` on ``cfg.benchmarks``; return the summary (also written to summary.json).

    ``lm``: an already built ``lm_eval.api.model.LM`` to use instead of loading ``cfg.checkpoint`` (the checkpoint
    is still hashed to key the results).
    """
    with cpu_threads(cfg.backend.cpu_threads):
        return _run(cfg, lm)


def _run(cfg: DictConfig, lm) -> dict:
    chosen = preset_benchmarks(cfg)
    check(cfg, chosen)
    if cfg.benchmarks.local_data:
        log.warning(
            "preset %s runs on local mini copies, not the real data: scores are pipeline checks only",
            cfg.benchmarks.name,
        )
    if not cfg.checkpoint:
        raise ValueError(
            "checkpoint is null: give checkpoint=<folder or hub name>, or evaluate a model config through "
            "python eval/run.py model=<name> (pipeline.evaluate builds its folder first)"
        )
    out_dir = Path(cfg.output_dir) / cfg.benchmarks.name
    checkpoint = fingerprint(
        cfg.checkpoint, cfg.revision, Path(cfg.paths.cache_dir) / "eval" / "file_hashes.json"
    )
    common = common_settings(cfg, checkpoint)

    # First every benchmark's key and any reusable result, so the summary written after each computed benchmark
    # already shows the results that were there before (a resumed run leaves an unchanged summary untouched).
    plan = []
    records: dict[str, dict | None] = {}
    for bench, entry in chosen:
        task = benchmark_task(cfg, bench, entry)
        settings = {**common, "benchmark": benchmark_settings(cfg, bench, entry, task)}
        key = settings_hash(settings)
        existing = read_json(out_dir / f"{bench.name}.json")
        if is_complete(existing, key) and not cfg.overwrite:
            log.info(
                "%s: up to date (%s), score %.4f",
                bench.name,
                out_dir / f"{bench.name}.json",
                existing["score"],
            )
            records[bench.name] = existing
        else:
            plan.append((bench, entry, task, settings, key))

    source_tm = None
    loaded_here = False
    try:
        for bench, entry, task, settings, key in plan:
            if lm is None:
                lm, loaded_here = load_model(cfg, checkpoint.get("commit")), True
            if source_tm is None:
                source_tm = lmtasks.task_manager(
                    [b for b, _ in chosen], [benchmark_task(cfg, b, e) for b, e in chosen]
                )
            tm = task_manager_for(source_tm, cfg, bench, entry, task, out_dir)
            cache = request_cache(out_dir, bench, key)
            if cfg.overwrite:
                clear_request_cache(cache)
            log.info("%s: evaluating task %s", bench.name, task)
            start = time.perf_counter()
            tracker = lm_eval_tracker(out_dir / "lm_eval", bench)
            out = evaluate_benchmark(lm, tm, cfg, bench, entry, task, cache, tracker)
            seconds = time.perf_counter() - start
            if out is None:  # a non-zero rank of a data-parallel run: rank 0 writes
                continue
            record = result_record(cfg, bench, task, out, settings, key, checkpoint, seconds, lm)
            if cfg.write_samples:
                rows = [
                    {"task": t, **s} for t, samples in (out.get("samples") or {}).items() for s in samples
                ]
                write_jsonl_atomic(out_dir / "samples" / f"{bench.name}.jsonl", rows)
            write_lm_eval_files(out, tracker, cfg)
            write_json_atomic(out_dir / f"{bench.name}.json", record)
            clear_request_cache(cache)  # the result file is the cache from here on
            records[bench.name] = record
            log.info("%s: %s = %.4f (%.1f s)", bench.name, bench.key, record["score"], seconds)
            write_if_changed(out_dir / "summary.json", build_summary(cfg, chosen, records, checkpoint))
    finally:
        rank = getattr(lm, "rank", 0)
        if loaded_here:
            lm = None
            free_memory()
    if rank != 0:
        return build_summary(cfg, chosen, records, checkpoint)

    summary = build_summary(cfg, chosen, records, checkpoint)
    write_if_changed(out_dir / "summary.json", summary)
    log.info(
        "%s on %s: average %s over %d benchmarks (computed now: %s)",
        cfg.benchmarks.name,
        cfg.checkpoint,
        summary["average"],
        len(chosen),
        ", ".join(b.name for b, *_ in plan) or "none",
    )
    return summary


def evaluate_checkpoint(
    checkpoint: str, benchmarks: str, output_dir: str, overrides: tuple[str, ...] = ()
) -> dict:
    """Compose the eval config for ``checkpoint`` and run it: what the end of a training run calls.

    ``evaluate_checkpoint(final_dir, "mio8", f"{run_dir}/eval", ("unsafe_code=true",))`` writes
    ``<run_dir>/eval/mio8/<benchmark>.json`` and ``summary.json`` and returns the summary.
    """
    from eval.config import compose

    # Paths go in after composing: as command-line overrides, a folder named like "0_method=mio" would not parse.
    cfg = compose([f"benchmarks={benchmarks}", *overrides])
    OmegaConf.update(cfg, "checkpoint", str(checkpoint))
    OmegaConf.update(cfg, "output_dir", str(output_dir))
    return run(cfg)
