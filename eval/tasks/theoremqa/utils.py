"""TheoremQA helpers: few-shot examples, answer extraction and matching after the official runner's logic.

The official evaluator (TIGER-AI-Lab/TheoremQA: ``answer_clean`` and ``compare_answer_with_groundtruth``) is
re-implemented here, keeping its rules and quirks (keyword tests for True/False are substring tests, as there), with
two changes: LaTeX answers are evaluated by ``latex_to_number`` (a whitelist arithmetic evaluator over Python's
``ast``) instead of ``latex2sympy`` followed by a bare ``eval``, and list answers may use ``[...]`` as well as
``(...)``.
"""

from __future__ import annotations

import ast
import math
import operator
import re

from eval.tasks.theoremqa.official_examples import examples

TRIGGERS = ["The answer is:", "The answer is", "the answer is"]
OPTIONS = ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"]
RELATIVE_TOLERANCE = 0.04  # official within_eps: |pred - gt| <= 4% of |gt|


def list_fewshot_samples() -> list[dict]:
    """The official runner's five examples (``official_examples.py``), as (Question, solution) rows."""
    return [{"Question": question, "solution": solution} for question, solution in examples[:5]]


def process_docs(dataset):
    """Drop the ``Picture`` image column (the prompt is text only, as in the official runner), keep a flag."""
    if "Picture" not in dataset.column_names:
        return dataset
    import datasets

    if isinstance(dataset.features["Picture"], datasets.Image):
        dataset = dataset.cast_column("Picture", datasets.Image(decode=False))  # no image decoding
    return dataset.map(lambda doc: {"has_picture": doc["Picture"] is not None}, remove_columns=["Picture"])


# --- a whitelist evaluator for the arithmetic in final answers ---------------------------------------------------

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_FUNCTIONS = {
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "ln": math.log,
    "sin": math.sin,
    "cos": math.cos,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _evaluate(node.left), _evaluate(node.right)
        if abs(exponent) > 1000:
            raise ValueError("exponent too large")
        return base**exponent
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if len(node.args) != 1 or node.keywords:
            raise ValueError("one argument expected")
        return _FUNCTIONS[node.func.id](_evaluate(node.args[0]))
    raise ValueError(f"not allowed: {ast.dump(node)[:60]}")


def _latex_to_python(s: str) -> str:
    s = (
        s.replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
        .replace("\\left", "")
        .replace("\\right", "")
    )
    for _ in range(5):  # innermost first, a few levels of nesting
        s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
        s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
    s = s.replace("\\times", "*").replace("\\cdot", "*").replace("\\pi", "pi").replace("\\ln", "ln")
    s = s.replace("\\exp", "exp").replace("\\sin", "sin").replace("\\cos", "cos").replace("\\log", "log")
    s = s.replace("\\,", "").replace("\\!", "").replace("{", "(").replace("}", ")").replace("^", "**")
    return s.strip()


def latex_to_number(s: str) -> float | int | None:
    """The value of a plain or LaTeX arithmetic expression ("\\frac{1}{2}", "3 \\times 10^{-4}", "2\\pi"), else None."""
    text = _latex_to_python(s)
    text = re.sub(r"(\d)\s*(pi|sqrt|\()", r"\1*\2", text)  # implicit products: 2pi, 3sqrt(2), 2(3)
    if not text or len(text) > 200:
        return None
    try:
        value = _evaluate(ast.parse(text, mode="eval"))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- the official matching rules -----------------------------------------------------------------------------------


def clean_units(pred: str) -> str:
    """Official clean_units: pi to 3.14, percent to /100, currency and degree signs removed."""
    pred = pred.replace("\\pi", "π")
    pred = re.sub(r"(?<![\d}])\\?π", "3.14", pred)
    pred = re.sub(r"(\d)(\\?π)", r"\1*3.14", pred)
    pred = re.sub(r"\{(\\?π)\}", "3.14", pred)
    pred = re.sub(r"\*(\\?π)", "*3.14", pred)
    for before, after in (("%", "/100"), ("$", ""), ("¥", ""), ("°C", ""), (" C", ""), ("°", "")):
        pred = pred.replace(before, after)
    return pred


def floatify(num) -> int | float | None:
    try:
        value = float(num)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(value):
        return None
    return round(value) if value.is_integer() else value


def number_it(num) -> int | float | None:
    if isinstance(num, (int, float)) and not isinstance(num, bool):
        return num
    num = clean_units(str(num))
    if floatify(num) is not None:
        return floatify(num)
    value = latex_to_number(num)
    return floatify(value) if value is not None else None


def extract_answer(pred: str, answer_flag: bool) -> str:
    low = pred.lower()
    if "yes" in low or "true" in low:
        return "True"
    if "no" in low or "false" in low:  # substring tests, as in the official extractor
        return "False"
    if any(option in low for option in OPTIONS):
        return pred
    if answer_flag:
        pred = clean_units(pred.split("=")[-1].strip())
        value = latex_to_number(pred)
        if value is not None:
            return str(value)
        if re.match(r"-?[\d.]+\s\D+$", pred) or re.match(r"-?[\d.]+\s[^\s]+$", pred):
            return pred.split(" ")[0]
        return pred
    numbers = re.findall(r"-?\d*\.?\d+", pred)
    return numbers[-1] if numbers else ""


def answer_clean(completion: str) -> str:
    """The final answer in a completion: the text after the last "The answer is", normalised."""
    pred = completion.strip("\n")
    if any(pred.count(trigger) > 1 for trigger in TRIGGERS):  # the model ran on into another example
        pred = pred.split("\n\n")[0]
    parts = re.split("|".join(TRIGGERS), pred)
    answer_flag = len(parts) > 1
    if answer_flag:
        pred = parts[-1]
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ")
    return extract_answer(pred, answer_flag).rstrip(".").rstrip("/")


def compare_two_numbers(pred, gt) -> bool:
    if pred is None or isinstance(pred, bool):
        return False
    try:
        if math.isnan(pred):
            return False
        if isinstance(gt, int):
            return round(pred) == gt
        return abs(pred - gt) <= abs(gt) * RELATIVE_TOLERANCE
    except (TypeError, ValueError, OverflowError):
        return False


def compare_two_lists(pred: list, gt: list) -> bool:
    if len(pred) != len(gt) or not all(isinstance(x, (int, float)) for x in pred):
        return False
    return all(compare_two_numbers(p, g) for p, g in zip(sorted(pred), sorted(gt), strict=True))


def groundtruth(doc: dict) -> tuple[str, int | float | list | None]:
    """(answer string, numeric answer or None) from the row's Answer and Answer_type."""
    answer, kind = str(doc["Answer"]).strip(), str(doc.get("Answer_type", "")).strip()
    try:
        if kind == "integer":
            return answer, int(float(answer))
        if kind == "float":
            return answer, float(answer)
        if kind in ("list of integer", "list of float"):
            values = ast.literal_eval(answer)
            cast = int if kind == "list of integer" else float
            return answer, [cast(v) for v in values]
    except (ValueError, SyntaxError, TypeError):
        pass
    return answer, None


def is_correct(pred: str, answer: str, number) -> bool:
    if answer.lower() in OPTIONS:
        return answer.lower() in pred.lower()
    if pred.lower() == answer.lower():
        return True
    if isinstance(number, (int, float)):
        return compare_two_numbers(number_it(pred), number)
    if isinstance(number, list) and pred[:1] in "([" and pred[-1:] in ")]" and pred:
        items = [x.strip() for x in pred[1:-1].split(",") if x.strip()]
        return compare_two_lists([number_it(x) for x in items], number)
    return False


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    answer, number = groundtruth(doc)
    return {"exact_match": int(is_correct(answer_clean(results[0]), answer, number))}
