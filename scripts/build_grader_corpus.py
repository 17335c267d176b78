"""A corpus of final-answer forms for the GSM8K grader, built from GSM8K train solutions' own numbers.

    python scripts/build_grader_corpus.py --out benchmarks/graders/forms.jsonl.gz

Each GSM8K train solution gives its work (calculator annotations `<<...>>` removed), its answer v, a tempting wrong
value w from the same solution (the result of an earlier step, else an operand of the last step, else a quantity of
the question) and the unit word its last line puts after v. A form writes the final answer the way chat models end
a solution (bold labels, headings, boxes in prose, sentences with units and currency, number words, conclusions
after arithmetic, restatements, notes after the answer, ...). The forms are written here from the conventions of
public model output (Llama, Qwen, DeepSeek, Gemma, Mistral and GPT-style chat answers); none is copied from a data
set. Solutions are dealt to the forms that fit them in turn, `--per-form` each.

One row per statement (form, GSM8K train index, question, true and tempting values, the text stating the true
value and the text with the two swapped); every statement gives three cases:
- `true`: the form stating v, graded against v (truth 1);
- `distractor`: the same text graded against w (truth 0: w appears in the work or the statement, not as the answer);
- `swapped`: the form stating w where it stated v (and v where it used w), graded against v (truth 0: v is in
  the work, but the final answer given is w).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("RL_LORA_DATA", ROOT.parent / "shared" / "data"))
_ANNOTATION = re.compile(r"<<([^=<>]*)=([^<>]*)>>")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
_STOP = frozenset("a an the and or of in on for to at per each every is are was were so he she they it this that "
                  "more left total in all altogether which who from than with by because since as if when then after "
                  "before now".split())

_NUMBER_WORD = re.compile(r"zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|\w+ty|"
                          r"hundred|thousand|million|dozen|half|twice|double|triple")
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def words(n: int) -> str:
    """An integer 0 <= n < 1,000,000 in English words ("two hundred forty-five")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + words(n % 100))
    return words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + words(n % 1000))


def _fmt(value: int, commas: bool = False) -> str:
    return f"{value:,}" if commas else str(value)


def solutions(data: Path) -> list[dict]:
    """Per usable GSM8K train solution: question, work lines, v, w, unit, currency, the last step."""
    found = []
    for index, line in enumerate(open(data / "gsm8k" / "train.jsonl")):
        row = json.loads(line)
        work, _, reference = row["answer"].rpartition("####")
        reference = reference.strip().replace(",", "")
        if not re.fullmatch(r"\d+", reference):
            continue
        v = int(reference)
        steps = []
        for expression, result in _ANNOTATION.findall(work):
            try:
                steps.append((expression, float(result)))
            except ValueError:
                continue
        lines = [_ANNOTATION.sub("", text).strip() for text in work.strip().splitlines() if text.strip()]
        if not lines or not steps:
            continue
        last_step = next((s for s in reversed(steps) if s[1] == v), None)
        operands = [int(float(x)) for x in _NUMBER.findall(last_step[0]) if float(x).is_integer()] \
            if last_step else []
        earlier = [int(r) for _, r in steps if r.is_integer() and int(r) != v and r > 0]
        question_numbers = [int(x) for x in _NUMBER.findall(row["question"].replace(",", ""))
                            if x.isdigit() and int(x) != v and int(x) > 0]
        candidates = earlier[::-1] + [o for o in operands if o != v and o > 0] + question_numbers
        if not candidates:
            continue
        w = candidates[0]
        last = lines[-1]
        stated = re.search(rf"(\$?)(?<![\d.,]){v}(?![\d]|[.,]\d)\s*([A-Za-z]+)?", last.replace(",", ""))
        unit = ""
        if stated and stated.group(2) and stated.group(2).lower() not in _STOP and len(stated.group(2)) > 2 \
                and not _NUMBER_WORD.fullmatch(stated.group(2).lower()):
            unit = stated.group(2)
        currency = "$" if (stated and stated.group(1)) or "$" in last else ""
        found.append({"index": index, "question": row["question"], "lines": lines, "v": v, "w": w, "unit": unit,
                      "currency": currency, "expression": last_step[0] if last_step else None,
                      "operands": operands, "last_stated": stated is not None})
    return found


def _pretty(expression: str, times: str = " × ") -> str:
    expression = re.sub(r"\s*([+\-/])\s*", r" \1 ", expression)
    return re.sub(r"\s*\*\s*", times, expression).strip()


# A form: name -> (fits(solution) -> bool, write(solution, answer, other) -> text). `answer` is the value the form
# states as the final answer, `other` the tempting value it also uses (swapped in the `swapped` case).
def _body(s: dict) -> str:
    return "\n".join(s["lines"])


def _money(s: dict, x: int, commas: bool = False) -> str:
    return s["currency"] + _fmt(x, commas)


def _u(s: dict) -> str:
    return (" " + s["unit"]) if s["unit"] else ""


FORMS = {
    # plain cues after the work
    "the_answer_is": (lambda s: True, lambda s, a, o: f"{_body(s)}\nThe answer is {_money(s, a)}."),
    "hashes": (lambda s: True, lambda s, a, o: f"{_body(s)}\n#### {a}"),
    "a_colon_line": (lambda s: True, lambda s, a, o: f"{_body(s)}\nA: {a}"),
    "final_answer_colon": (lambda s: True, lambda s, a, o: f"{_body(s)}\n\nFinal answer: {_money(s, a)}{_u(s)}"),
    "final_answer_is_units": (lambda s: True,
                              lambda s, a, o: f"{_body(s)}\nThe final answer is {_money(s, a)}{_u(s)}."),
    # boxes in prose (Llama / Qwen / DeepSeek / Minerva-style)
    "boxed_in_sentence": (lambda s: True,
                          lambda s, a, o: f"{_body(s)}\nTherefore, the final answer is $\\boxed{{{a}}}$."),
    "llama_boxed_hope": (lambda s: True, lambda s, a, o: f"## Step 1\n{_body(s)}\n\nTherefore, the final answer "
                                                         f"is: $\\boxed{{{a}}}$. I hope it is correct."),
    "minerva_final_answer": (lambda s: True, lambda s, a, o: f"{_body(s)}\nFinal Answer: The final answer is ${a}$. "
                                                             "I hope it is correct."),
    "qwen_display_box": (lambda s: True, lambda s, a, o: f"{_body(s)}\n\nThus, the answer is:\n\\[\n\\boxed{{{a}}}\n"
                                                         "\\]"),
    "deepseek_bold_heading_box": (lambda s: True, lambda s, a, o: f"{_body(s)}\n\n**Final Answer**\n\\[\n"
                                                                  f"\\boxed{{{a}}}\n\\]"),
    "latex_inline_paren": (lambda s: True, lambda s, a, o: f"{_body(s)}\nSo the answer is \\({a}\\){_u(s)}."),
    # headings and bold labels (GPT / Gemma / Mistral-style markdown)
    "heading_final_answer_next_line": (lambda s: True, lambda s, a, o: f"### Solution\n{_body(s)}\n\n### Final "
                                                                       f"Answer\n{_money(s, a)}{_u(s)}\n\nLet me "
                                                                       f"know if you'd like the {o} step explained."),
    "heading_answer_then_sentence": (lambda s: True, lambda s, a, o: f"{_body(s)}\n\n## Answer\n\nThe result is "
                                                                     f"**{_money(s, a)}**{_u(s)}."),
    "bold_answer_value_then_explanation": (lambda s: True, lambda s, a, o: f"**Answer: {_money(s, a)}{_u(s)}**\n\n"
                                                                           f"Explanation:\n{_body(s)}"),
    "bold_answer_label": (lambda s: True, lambda s, a, o: f"{_body(s)}\n\n**Answer:** {_money(s, a)}"),
    "bold_final_answer_label": (lambda s: True,
                                lambda s, a, o: f"{_body(s)}\n\n**Final Answer:** {_money(s, a)}{_u(s)}"),
    "bold_value_in_sentence": (lambda s: True,
                               lambda s, a, o: f"{_body(s)}\n\nSo, the answer is **{_money(s, a)}**{_u(s)}."),
    "gemma_bold_sentence": (lambda s: True, lambda s, a, o: f"{_body(s)}\n\n**Therefore, the answer is "
                                                            f"{_money(s, a)}.**"),
    # numbers as words and notations
    "number_words": (lambda s: s["v"] < 1000 and s["w"] < 1000,
                     lambda s, a, o: f"{_body(s)}\nThe answer is {words(a)}{_u(s)}."),
    "number_words_and_digits": (lambda s: s["v"] < 1000 and s["w"] < 1000,
                                lambda s, a, o: f"The answer is {words(a).capitalize()} ({a}){_u(s)}."),
    "thousands_commas_money": (lambda s: s["v"] >= 1000 and s["w"] != s["v"],
                               lambda s, a, o: f"{_body(s)}\nThe answer is ${_fmt(a, True)}.00."),
    "scale_thousand": (lambda s: s["v"] % 1000 == 0 and s["v"] >= 1000 and s["w"] % 1000 == 0,
                       lambda s, a, o: f"{_body(s)}\nThe answer is {a // 1000} thousand{_u(s)}."),
    "superscript_unit": (lambda s: True, lambda s, a, o: f"{_body(s)}\n**Answer:** {a} m² ({o} m² before the last "
                                                         "step)"),
    "full_width_digits": (lambda s: True, lambda s, a, o: f"The answer is {str(a).translate(_FULL_WIDTH)}."),
    # sentences: conclusions, subjects, modifiers, restatements
    "last_line_sentence": (lambda s: s["last_stated"], lambda s, a, o: "The answer is: " + _swap_line(s, a)),
    "expression_equals_result": (lambda s: s["expression"] is not None,
                                 lambda s, a, o: f"The answer is: {_pretty(s['expression'])} = {_money(s, a)}"
                                                 f"{_u(s)}."),
    "expression_which_is": (lambda s: s["expression"] is not None,
                            lambda s, a, o: f"The answer is {_pretty(s['expression'], ' times ')}, which is "
                                            f"{_money(s, a)}."),
    "equals_then_so_conclusion": (lambda s: True,
                                  lambda s, a, o: f"The answer is: the earlier step gives {o} + 0 = {o}, so the "
                                                  f"total is {_money(s, a)}{_u(s)}."),
    "therefore_conclusion": (lambda s: True, lambda s, a, o: f"{_body(s)}\nThe answer is: we start from {o}{_u(s)}, "
                                                             f"therefore {_money(s, a)}{_u(s)} in the end."),
    "count_subject_predicate": (lambda s: len(s["operands"]) == 2 and "*" in (s["expression"] or ""),
                                lambda s, a, o: f"The answer is: {s['operands'][0]} groups of {s['operands'][1]} "
                                                f"make {_money(s, a)}{_u(s)} in all."),
    "at_each_cost": (lambda s: len(s["operands"]) == 2 and "*" in (s["expression"] or ""),
                     lambda s, a, o: f"The answer is: at ${s['operands'][1]} each, {s['operands'][0]} of them cost "
                                     f"${a}."),
    "total_of_after_gerund": (lambda s: True, lambda s, a, o: f"The answer is: he made a total of {_money(s, a)} "
                                                              f"after using {o}{_u(s)}."),
    "result_if_clause": (lambda s: True, lambda s, a, o: f"The answer is: the result is {_money(s, a)} if we "
                                                         f"subtract the {o} from before."),
    "hyphen_unit_adjective": (lambda s: True, lambda s, a, o: f"The answer is: she needs {a} more {o}-liter "
                                                              f"bottles."),
    "answer_then_note": (lambda s: True, lambda s, a, o: f"{_body(s)}\nThe answer is {_money(s, a)}.\n\nNote: the "
                                                         f"answer is based on the {o} found above."),
    "answer_then_in_summary": (lambda s: True, lambda s, a, o: f"The answer is {_money(s, a)}{_u(s)}.\n\nIn summary,"
                                                               f" we used {o} from the first step."),
    "answer_because": (lambda s: True, lambda s, a, o: f"The answer is {_money(s, a)} because we started from "
                                                       f"{o}."),
    "restated_ie": (lambda s: s["v"] > s["w"], lambda s, a, o: f"The answer is {_money(s, a)}{_u(s)}, i.e. "
                                                               f"{o} plus {abs(a - o)} more."),
    "restated_in_words": (lambda s: s["v"] < 1000 and s["w"] < 1000,
                          lambda s, a, o: f"The answer is {a}{_u(s)} (that is, {words(a)})."),
    "answer_first_then_remark": (lambda s: True, lambda s, a, o: f"The answer is {a}{_u(s)}, {o} of them from the "
                                                                 "first part."),
    "self_correction_question": (lambda s: True, lambda s, a, o: f"{_body(s)}\nWait, is the answer {o}? No, "
                                                                 f"rechecking the steps: the answer is {a}."),
}

_OPERAND_TEMPTS = ("count_subject_predicate", "at_each_cost")
_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _swap_line(s: dict, a: int) -> str:
    """The solution's last line stating `a` where it states v (and v where it states w, when swapped)."""
    line = s["lines"][-1].replace(",", "")
    v, w = s["v"], s["w"]
    if a == v:
        return line
    pattern = re.compile(rf"(?<![\d.]){v}(?![\d]|\.\d)|(?<![\d.]){w}(?![\d]|\.\d)")
    return pattern.sub(lambda m: str(w) if m.group() == str(v) else str(v), line)


def build(data: Path, per_form: int) -> list[dict]:
    pool = solutions(data)
    cases = []
    cursor = 0
    for name, (fits, write) in FORMS.items():
        taken = 0
        scanned = 0
        while taken < per_form and scanned < len(pool):
            s = pool[cursor % len(pool)]
            cursor += 1
            scanned += 1
            if not fits(s) or s["v"] == s["w"]:
                continue
            taken += 1
            v, w = s["v"], s["w"]
            if name in _OPERAND_TEMPTS and s["operands"][0] != v:
                w = s["operands"][0]  # the subject's count is the tempting value here
            stating = write(s, v, w)
            swapped = write(s, w, v)
            cases.append({"form": name, "train_index": s["index"], "question": s["question"], "true": v,
                          "tempting": w, "stating": stating, "swapped": swapped})
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-form", type=int, default=100, help="solutions per form")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "graders" / "forms.jsonl.gz")
    args = parser.parse_args()
    cases = build(args.data, args.per_form)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime 0 and no file name in the header: the same corpus gives the same bytes
    with open(args.out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as out:
        for case in cases:
            out.write((json.dumps(case, ensure_ascii=False) + "\n").encode())
    forms = sorted({c["form"] for c in cases})
    print(f"{len(cases)} statements, {3 * len(cases)} cases, {len(forms)} forms -> {args.out}")


if __name__ == "__main__":
    main()
