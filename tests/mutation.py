"""Mutation testing (``make mutation``): mutmut over the training math, the reference cache, checkpoints and data
preparation (``[tool.mutmut]`` in pyproject.toml), then a report in docs/mutation.md.

    python tests/mutation.py              # copy the tree to .cache/mutation/tree, run mutmut there, write the report
    python tests/mutation.py --report     # only rewrite the report from the last run
    python tests/mutation.py --children 1 # fewer parallel test processes (a shared machine)

mutmut rewrites the modules it mutates, so it runs in a copy of the working tree (tracked and untracked,
non-ignored files), never in the checkout itself. Each mutant runs only the tests of the restricted subset
(``pytest_add_cli_args_test_selection``) that reach the mutated function: the fast unit tests, no training runs.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREE = REPO / ".cache" / "mutation" / "tree"
REPORT = REPO / "docs" / "mutation.md"
STATUS = re.compile(r"^\s*(?P<name>[\w.]+__mutmut_\d+): (?P<status>[\w ]+)$")


def copy_tree() -> None:
    """The working tree's files (tracked, and untracked unless ignored) into TREE; mutmut's earlier state is kept
    only when no file changed (mutmut reuses results of unchanged functions by itself)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src, dst = REPO / name, TREE / name
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def mutmut(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], cwd=TREE, capture_output=capture, text=True, check=False)


def statuses() -> dict[str, str]:
    out = mutmut("results", "--all", "true", capture=True).stdout
    return {m["name"]: m["status"].strip() for line in out.splitlines() if (m := STATUS.match(line))}


DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({n: get_diff_for_mutant(n) for n in json.loads(sys.stdin.read())}))
"""


def diffs(names: list[str]) -> dict[str, str]:
    """Each mutant's diff, in one process (``mutmut show`` starts one per mutant)."""
    out = subprocess.run(
        [sys.executable, "-c", DIFFS],
        cwd=TREE,
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def write_report(seconds: float | None, children: int) -> None:
    import tomllib

    config = tomllib.loads((TREE / "pyproject.toml").read_text())["tool"]["mutmut"]
    found = statuses()
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in found.items():
        by_module[name.split("__mutmut_")[0].split(".x")[0]][status] += 1
    total = Counter(found.values())
    tested = total["killed"] + total["survived"] + total["timeout"] + total["suspicious"]
    score = total["killed"] / tested if tested else 0.0
    lines = [
        "# Mutation testing: the last report",
        "",
        "Written by `make mutation` (`tests/mutation.py`, mutmut "
        f"{subprocess.run([sys.executable, '-m', 'pip', 'show', 'mutmut'], capture_output=True, text=True).stdout.split('Version: ')[1].split()[0]}"
        f") on {time.strftime('%Y-%m-%d')}. Mutated: {', '.join(f'`{p}`' for p in config['only_mutate'])}.",
        f"Tests run against each mutant (the restricted subset): {', '.join(f'`{t}`' for t in config['pytest_add_cli_args_test_selection'])}; "
        "each mutant runs only those of them that reach the mutated function.",
        "",
        f"Wall time: {f'{seconds / 60:.1f} min' if seconds else 'not measured (report only)'} with {children} test "
        "processes on a shared 2-core CPU machine (other jobs running).",
        "",
        f"**Score: {total['killed']} killed of {tested} mutants the subset reaches = {100 * score:.1f}%**; "
        f"{total['no tests']} more are in code the subset never runs (listed per module below).",
        "",
        "| module | killed | survived | timeout | no tests | score (of reached) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for module, c in sorted(by_module.items()):
        reached = c["killed"] + c["survived"] + c["timeout"] + c["suspicious"]
        pct = f"{100 * c['killed'] / reached:.0f}%" if reached else "-"
        lines.append(
            f"| `{module}` | {c['killed']} | {c['survived']} | {c['timeout']} | {c['no tests']} | {pct} |"
        )
    survivors = sorted(n for n, s in found.items() if s == "survived")
    lines += ["", f"## Surviving mutants ({len(survivors)})", ""]
    lines += [
        'Why the ones that matter were killed or are left: docs/reliability.md, "Mutation testing".',
        "",
    ]
    shown = diffs(survivors)
    for name in survivors:
        diff = shown[name]
        changed = [
            ln for ln in diff.splitlines() if ln.startswith(("-", "+")) and not ln.startswith(("---", "+++"))
        ]
        lines.append(f"- `{name}`: " + " / ".join(f"`{ln.strip()}`" for ln in changed[:2]))
    REPORT.write_text("\n".join(lines) + "\n")
    print(f"{REPORT}: {total['killed']}/{tested} killed ({100 * score:.1f}%), {len(survivors)} survived")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--report", action="store_true", help="only rewrite docs/mutation.md from the last run"
    )
    parser.add_argument("--children", type=int, default=2, help="parallel test processes")
    parser.add_argument("mutants", nargs="*", help="run only these mutants (names from the report)")
    args = parser.parse_args()
    seconds = None
    if not args.report:
        copy_tree()
        start = time.time()
        mutmut("run", "--max-children", str(args.children), *args.mutants)
        seconds = time.time() - start
    write_report(seconds, args.children)


if __name__ == "__main__":
    main()
