"""The answer a statement gives, read as a small grammar rather than by position.

A statement is what an answer cue opens ("The answer is 64 pens, one for each of the 8 tables.", a `\\boxed{}`'s
content). It is read in steps, each a small function:

1. `clean`: compatibility forms (full-width digits), LaTeX math delimiters and `\\text{}` wrappers become plain text.
2. `set_asides_apart`: what only supports the answer is removed before any rule looks for `=` or a number: a
   parenthesised aside, an opening subordinate clause ("After 3 days, ..."), and a trailing one (", since ...",
   ", not 11", ", that is ...", "because ...").
3. `items`: the numbers become items: a number or a plain-arithmetic expression (`4 + 9`, `5 times 6`), chained
   through `=` / "is" / "equals" to the result it states (`12 + 30 = 42`). Exponents (`m^2`) are never items; a
   power (`2^{10}`) is evaluated; a scale word multiplies (`2.5 million`); an expression with an unknown (`4 + x`)
   equals nothing.
4. `choose`: two different values given as alternatives (`3, 5`, `3 or 5`, `6-8`, `6 to 8`, `x = 3 or x = 5`) are
   a hedge; the same value restated is not. Otherwise the first item the statement states, skipping items inside
   a modifier phrase ("after 4 hours", "of the 8 tables", "in 3 days") unless every item is in one (then the
   last); with the question at hand, a candidate that is only a quantity the question gave yields to another; a
   later computation that takes the chosen value as an operand continues it ("... = 9 eggs, making 9 * 2 = $18").

Every step is linear in the statement. `Reading` records what was read, the rule that decided and every candidate
considered, for `rl-lora grade --explain`.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from fractions import Fraction

from rewards.numbers import MINUS, NUMBER_RE, UNREADABLE, _Unreadable, normalize, value

Value = Fraction | _Unreadable

# -- 1. clean --------------------------------------------------------------------------------------------------------
_MATH_DELIMITERS = re.compile(r"\\[()\[\]]|\\displaystyle")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")


def clean(statement: str) -> str:
    statement = normalize(statement)
    statement = _MATH_DELIMITERS.sub(" ", statement)
    return _TEXT_WRAPPER.sub(r" \1 ", statement)


# -- 2. asides -------------------------------------------------------------------------------------------------------
_PARENTHESES = re.compile(r"\([^()\n]*\)")
_OPENING_CLAUSE = re.compile(r"^\W*(?:since|because|as|if|when|after|before|given|with|at|in|for|by|from|over|to|"
                             r"during|within|once|using)\b[^,\n]*,", re.IGNORECASE)
_TRAILING_CLAUSE = re.compile(r"(?:(?:,\s*|\s+)(?:since|because|not|but not|rather than|instead of|i\.e\.|"
                              r"e\.g\.|where|check|verify|verifying|checking)|,\s*as)\b", re.IGNORECASE)


def set_asides_apart(statement: str) -> tuple[str, list[str]]:
    """The statement without its asides, and the asides (for --explain). A statement that is only an aside keeps
    it: "The answer is (6)" states 6."""
    asides: list[str] = []
    without = _PARENTHESES.sub(lambda m: asides.append(m.group()) or " ", statement)
    opening = _OPENING_CLAUSE.match(without)
    if opening and NUMBER_RE.search(without, opening.end()):
        asides.append(opening.group())
        without = without[opening.end():]
    first_number = NUMBER_RE.search(without)
    if first_number:  # a trailing clause only after the answer has been stated
        trailing = _TRAILING_CLAUSE.search(without, first_number.end())
        if trailing:
            asides.append(without[trailing.start():])
            without = without[:trailing.start()]
    if not NUMBER_RE.search(without):
        return statement, []
    return without, asides


# -- 3. items --------------------------------------------------------------------------------------------------------
# Up to three unit words between a number and a symbol ("360 coins - 270 coins = 90 coins", "12 beetles/snake =").
_UNITS = (r"(?:(?!(?:or|and|so|then|is|are|was|were|but|if|which|that|because|since|not|to)\b)[A-Za-z][\w'’./]*"
          r"\s+){0,3}")
_OPERATOR = re.compile(rf"\s*(?:\\?%\s*)?(?:{_UNITS}(?P<op>[+*×·÷/–{re.escape(MINUS)}]|\bx\b|\\times|\\cdot|\\div)"
                       r"|(?P<word_op>\btimes\b|\bplus\b|\bminus\b|\bdivided by\b|\bmultiplied by\b|\bover\b))"
                       r"\s*(?:\\?\$\s?)?", re.IGNORECASE)
_EQUALS = re.compile(rf"\s*(?:\\?%\s*)?(?:{_UNITS}(?:=|\\approx|≈)|\bis equal to\b|\bequals\b|\bis\b|\bgives\b|"
                     r"\bmakes\b|→|\\Rightarrow)\s*(?:\\?\$\s?)?", re.IGNORECASE)
_SCALE = re.compile(r"\s*(?P<word>thousand|million|billion|trillion)\b", re.IGNORECASE)
SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9, "trillion": 10 ** 12}
_POWER = re.compile(r"\s*\^\s*(?:\{\s*(?P<braced>[^{}]*)\}|(?P<bare>\d+))")
# `4 + x` has an unknown; `$7200/year` is a rate, not a division by a variable.
_UNKNOWN_OPERAND = re.compile(rf"\s*[+*×÷{re.escape(MINUS)}]\s*[A-Za-z(]")
# A minus with a space before its number is its sign at the start of a statement or a result, not between numbers.
_NEGATING_MINUS = re.compile(rf"(?:^|[{{=(:]|\bis)\s*[{MINUS}]\s+$")
_MAX_POWER = 100
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


@dataclass(frozen=True)
class Number:
    start: int
    end: int
    text: str
    value: Value
    plain: Value | None = None  # without its scale word, when it has one
    scale: str | None = None


@dataclass(frozen=True)
class Item:
    """A number or expression the statement gives, with the result it states through `=` when it does."""
    start: int
    end: int
    text: str
    value: Value
    operands: tuple[Value, ...] = ()  # the numbers of its computation, when it is one
    computed: bool = False  # `a op b = c`: the value is the stated result c
    evaluated: bool = False  # `a op b` with no result stated: the value is evaluated here
    plain: Value | None = None  # a single number's value without its scale word ("$4 million": 4)
    scale: str | None = None


def _numbers(text: str) -> list[Number]:
    """Every number of the text as a reader takes it: exponents are not numbers of their own, a power or a scale
    word is part of its number, a minus followed by a space before it is its sign."""
    found: list[Number] = []
    position = 0
    while True:
        match = NUMBER_RE.search(text, position)
        if match is None:
            return found
        position = max(match.end(), position + 1)
        before = text[max(0, match.start() - 2):match.start()]
        if before.endswith("^") or before.endswith("^{"):
            continue  # the exponent of a unit (m^2) or of the number before it
        start, end, read = match.start(), match.end(), value(match)
        if _space_grouped_before_a_hyphen(match, text):
            first = match.group(0).split()[0]
            end, read = start + len(first), value(NUMBER_RE.fullmatch(first))
            position = end + 1
        power = _POWER.match(text, end)
        if power is None and re.match(r"\s*\^", text[end:end + 8]):
            read = UNREADABLE  # a power that is not a plain integer (10^{10^{10}}): too large to be an answer
        elif power and read is not UNREADABLE:
            exponent = power.group("bare") or power.group("braced").strip()
            read = read ** int(exponent) if re.fullmatch(r"-?\d+", exponent) and abs(int(exponent)) <= _MAX_POWER \
                and read != 0 else UNREADABLE
            end = position = power.end()
        scale, plain = _SCALE.match(text, end), None
        if scale and read is not UNREADABLE:
            plain, read, end = read, read * SCALES[scale.group("word").lower()], scale.end()
            position = end
        if _NEGATING_MINUS.search(text[max(0, start - 6):start]) and read is not UNREADABLE and \
                not match.group("sign"):
            read, plain = -read, (None if plain is None else -plain)
        found.append(Number(start, end, text[start:end], read, plain,
                            scale.group("word").lower() if plain is not None else None))


def _space_grouped_before_a_hyphen(match: re.Match, text: str) -> bool:
    """`3 100-page books`: a space-grouped number followed by a hyphenated word is two numbers."""
    return (" " in match.group(0) and match.group("whole") is None
            and re.match(r"-[A-Za-z]", text[match.end():match.end() + 2]) is not None)


def _operator(gap: str) -> str | None:
    match = _OPERATOR.fullmatch(gap)
    if match is None:
        return None
    op = (match.group("op") or match.group("word_op")).lower().replace("−", "-").replace("–", "-")
    return {"x": "*", "×": "*", "·": "*", "\\times": "*", "\\cdot": "*", "times": "*", "multiplied by": "*",
            "÷": "/", "\\div": "/", "divided by": "/", "over": "/", "plus": "+", "minus": "-"}.get(op, op)


def _evaluate(values: list[Value], operators: list[str]) -> Value:
    """Exact arithmetic with the usual precedence; UNREADABLE for an unreadable operand or a division by zero."""
    if UNREADABLE in values:
        return UNREADABLE
    output: list[Fraction] = [values[0]]
    pending: list[str] = []

    def apply(op: str) -> bool:
        right, left = output.pop(), output.pop()
        if op == "/" and right == 0:
            return False
        output.append(_ARITHMETIC[op](left, right))
        return True

    for op, operand in zip(operators, values[1:]):
        while pending and _PRECEDENCE[pending[-1]] >= _PRECEDENCE[op]:
            if not apply(pending.pop()):
                return UNREADABLE
        pending.append(op)
        output.append(operand)
    while pending:
        if not apply(pending.pop()):
            return UNREADABLE
    return output[0]


def _is_range(gap: str, left: Value, right: Value, followed_by_equals: bool) -> bool:
    """`6-8 hours`: a hyphen between two integers that rise, with no result stated, is a range, not a subtraction."""
    return (gap in ("-", "–") and not followed_by_equals and isinstance(left, Fraction)
            and isinstance(right, Fraction)
            and left.denominator == right.denominator == 1 and 0 <= left < right)


def items(text: str) -> list[Item]:
    """The statement's numbers grouped into expressions, each chained through `=` to the result it states."""
    numbers = _numbers(text)
    gaps = [text[a.end:b.start] for a, b in zip(numbers, numbers[1:])]
    operators_between = [_operator(gap) for gap in gaps]
    equals_between = [_EQUALS.fullmatch(gap) is not None for gap in gaps]
    # states_result[i]: the expression going on through numbers[i] ends in `=` (`16-3-4 = 9`); one backward pass.
    states_result = [False] * len(numbers)
    for i in range(len(gaps) - 1, -1, -1):
        states_result[i] = equals_between[i] or (operators_between[i] is not None and states_result[i + 1])
    found: list[Item] = []
    index = 0
    while index < len(numbers):
        # One expression: numbers joined by operators.
        first = index
        operators: list[str] = []
        while index < len(gaps) and operators_between[index] is not None:
            if _is_range(gaps[index].strip(), numbers[index].value, numbers[index + 1].value, states_result[index]):
                break
            operators.append(operators_between[index])
            index += 1
        expression = numbers[first:index + 1]
        unknown = _UNKNOWN_OPERAND.match(text, expression[-1].end) is not None
        read = UNREADABLE if unknown else _evaluate([n.value for n in expression], operators)
        start, end = expression[0].start, expression[-1].end
        operands = tuple(n.value for n in expression) if operators else ()
        # A stated result: `= c`, possibly chained (`a + b = c = d`): the last one.
        computed = False
        while index < len(gaps) and equals_between[index]:
            operands = operands or (read,)
            result_first = index = index + 1
            while index < len(gaps) and operators_between[index] is not None:
                index += 1
            result = numbers[result_first:index + 1]
            read = _evaluate([n.value for n in result], operators_between[result_first:index])
            end, computed = result[-1].end, True
        index += 1
        last = numbers[index - 1]
        plain = last.plain if last.end == end and (computed or not operators) else None
        found.append(Item(start, end, text[start:end], read, operands, computed,
                          evaluated=bool(operators) and not computed, plain=plain, scale=plain and last.scale))
    return found


# -- 4. choose -------------------------------------------------------------------------------------------------------
_ALTERNATIVES = re.compile(r"(?:\s*(?:,|;|/|\bor\b|\band\b|\bto\b|–|-|\\q?quad|\\?\$))+\s*(?:[A-Za-z]\s*=\s*)?",
                           re.IGNORECASE)
_MODIFIER = re.compile(r"(?<!total )\b(?:after|at|in|for|of|per|with|from|over|within|during|on|until|before|than|"
                       r"every|each|by|between|among|into|across|around)\s+"
                       r"(?:(?:the|a|an|only|just|another|its|their|his|her|those|these|"
                       r"first|last|next|all)\s+)*(?:\\?\$\s?)?$", re.IGNORECASE)
_FROM_BEFORE = re.compile(r"\bfrom\s+(?:\\?\$\s?)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    text: str
    value: Value
    note: str  # why it was or was not chosen


@dataclass(frozen=True)
class Reading:
    """What a statement was read as: `value` (None: no number; UNREADABLE: a hedge or an unreadable number), the
    text read, the rule that decided, and every candidate considered."""
    value: Value | None
    text: str
    rule: str
    candidates: tuple[Candidate, ...] = ()
    asides: tuple[str, ...] = field(default=())
    plain: Value | None = None  # the value without its scale word ("$4 million": 4), when it has one
    scale: str | None = None  # that word


def _in_modifier(text: str, item: Item) -> str | None:
    match = _MODIFIER.search(text, max(0, item.start - 60), item.start)
    return match.group().split()[0].lower() if match else None


def _hedge(text: str, found: list[Item]) -> tuple[Item, Item] | None:
    """Two different values given as alternatives, each the other's neighbour, separated only by a list or range
    word (`from A to B` is a change, not a hedge)."""
    for left, right in zip(found, found[1:]):
        gap = text[left.end:right.start]
        if not _ALTERNATIVES.fullmatch(gap) or left.value == right.value:
            continue
        if gap.strip().lower() == "to" and _FROM_BEFORE.search(text, max(0, left.start - 20), left.start):
            continue
        return left, right
    return None


_STARTS_WITH_NUMBER = re.compile(rf"^[\s*:$\\{{]*(?:[{MINUS}–]\s*)?(?:\\?\$\s?)?(?:\d|\.\d|\\[dt]?frac)")
_CONCLUSION = re.compile(r"\b(?:so|therefore|thus|hence|which means|this means|that means|meaning|giving|"
                         r"in total|altogether)\b", re.IGNORECASE)


_VARIABLE_ALTERNATIVE = re.compile(r"\s*,?\s*(?:or|and)\s+[A-Za-z]\w*\s*=\s*", re.IGNORECASE)
_ROUNDED = re.compile(r"[.%\s]*(?:[A-Za-z/]+\s*)?[,;]?\s*(?:which\s+)?(?:is\s+)?(?:rounds?|rounded|rounding)"
                      r"(?:\s+(?:up|down))?"
                      r"\s+to\s+(?:about\s+)?", re.IGNORECASE)


def _stated_result(tail: str, asides: tuple[str, ...]) -> Reading | None:
    """A statement with `=` states the result after its last `=`: the first value there ("= 50 miles for 5 days"
    is 50), a rounding of it if the statement gives one ("= 15.36 minutes, which rounds down to 15"), a hedge if
    it lists different values. None when nothing after the `=` is a number."""
    found = items(tail)
    if not found:
        return None
    hedge = _hedge(tail, found)
    if hedge:
        left, right = hedge
        return Reading(UNREADABLE, tail[left.start:right.end].strip(), "hedge: two different values as "
                       "alternatives after the last '='", tuple(Candidate(i.text, i.value, "alternative")
                                                                for i in hedge), asides)
    chosen, rule = 0, "the result after the statement's last '='"
    rounded = _ROUNDED.match(tail, found[0].end)
    if rounded and len(found) > 1 and found[1].start == rounded.end():
        chosen, rule = 1, "the rounding the statement gives of its result"
    notes = {chosen: "read"}
    item = found[chosen]
    candidates = tuple(Candidate(i.text, i.value, notes.get(n, "not the first after '='"))
                       for n, i in enumerate(found))
    return Reading(item.value, item.text, rule, candidates, asides, item.plain, item.plain and item.scale)


def read_statement(statement: str, question_numbers: frozenset[Fraction] = frozenset()) -> Reading:
    """The answer `statement` gives (see the module's docstring). `question_numbers`: the quantities the question
    states, when known (a candidate that is only one of them yields to one that is not).

    Two shapes: a statement that opens with its number ("64 pens, one for each of the 8 tables", a box) states
    the answer first; a sentence ("Janet sells 16 - 3 - 4 = 9 eggs, making 9 * 2 = $18") states it as the result
    of its last computation, or, with none, as the first value its conclusion ("so ...") or, without one, the
    sentence states."""
    text, asides = set_asides_apart(clean(statement))
    equals = max(text.rfind("="), text.rfind("≈"))
    if equals >= 0 and _VARIABLE_ALTERNATIVE.search(text):  # x = 3 or x = 5: a hedge across the `=` signs
        found = items(text)
        for left, right in zip(found, found[1:]):
            if _VARIABLE_ALTERNATIVE.fullmatch(text, left.end, right.start) and left.value != right.value:
                return Reading(UNREADABLE, text[left.start:right.end].strip(), "hedge: two different values as "
                               "alternatives", (Candidate(left.text, left.value, "alternative"),
                                                Candidate(right.text, right.value, "alternative")), tuple(asides))
    if equals >= 0:
        reading = _stated_result(text[equals + 1:], tuple(asides))
        if reading is not None:
            return reading
    found = items(text)
    if not found:
        return Reading(None, "", "no number in the statement", asides=tuple(asides))
    hedge = _hedge(text, found)
    if hedge:
        left, right = hedge
        return Reading(UNREADABLE, text[left.start:right.end].strip(), "hedge: two different values as "
                       "alternatives", tuple(Candidate(i.text, i.value, "alternative") for i in hedge), tuple(asides))
    notes: dict[int, str] = {}
    number_first = _STARTS_WITH_NUMBER.match(text) is not None
    computations = [i for i, item in enumerate(found) if item.computed]
    if number_first:
        chosen, rule = 0, "the value the statement opens with"
        notes.update({i: "after the value the statement opens with" for i in range(1, len(found))})
        if found[0].computed:
            rule = "the result the statement's opening computation gives (after =)"
        elif question_numbers and found[0].value in question_numbers:
            others = [i for i in range(1, len(found)) if not _in_modifier(text, found[i])
                      and found[i].value not in question_numbers]
            if others:
                notes[0] = "skipped: a quantity the question gives, and the statement has another"
                chosen, rule = others[0], "the first value it states that the question does not give"
    elif computations:
        chosen, rule = computations[-1], "a sentence: the result of its last computation"
        for i in range(chosen):
            notes[i] = "not the sentence's last computation"
    else:
        conclusion = None
        for conclusion in _CONCLUSION.finditer(text, found[0].end):
            pass
        pool = [i for i, item in enumerate(found) if conclusion is None or item.start >= conclusion.end()] or \
            list(range(len(found)))
        stated = []
        for index in pool:
            modifier = _in_modifier(text, found[index])
            if modifier:
                notes[index] = f"skipped: in a modifier phrase ({modifier!r} before it)"
            else:
                stated.append(index)
        # A sentence states its answer as its object, after the subject ("75 cans would have 225 balls", "the 3
        # people lost a total of 89 pounds"): the last value it states outside modifier phrases.
        where = "its conclusion" if conclusion is not None and pool[0] > 0 else "the sentence"
        if stated:
            chosen, rule = stated[-1], f"a sentence: the last value {where} states"
        else:
            chosen, rule = pool[-1], f"a sentence: every value of {where} is in a modifier phrase: the last"
        if question_numbers and found[chosen].value in question_numbers:
            others = [i for i in stated if i != chosen and found[i].value not in question_numbers]
            if others:
                notes[chosen] = "skipped: a quantity the question gives, and the sentence has another"
                chosen, rule = others[-1], "a sentence: the last value it states that the question does not give"
    while True:  # a later computation that takes the chosen value as an operand continues it
        later = next((i for i in range(chosen + 1, len(found)) if found[i].computed
                      and found[chosen].value in found[i].operands), None)
        if later is None:
            break
        notes[chosen] = "continued: a later computation takes it as an operand"
        chosen, rule = later, "the result of the computation that continues the stated value"
    item = found[chosen]
    notes[chosen] = "read"
    candidates = tuple(Candidate(i.text, i.value, notes.get(n, "not chosen")) for n, i in enumerate(found))
    if item.evaluated and question_numbers and all(v in question_numbers for v in item.operands):
        # "What is 23 + 45?" -> "The answer is 23 + 45.": the question's own arithmetic, restated, computes nothing;
        # evaluating it would be reward a policy collects by copying the question.
        return Reading(UNREADABLE, item.text, "an expression of the question's own numbers, with no result stated",
                       candidates, tuple(asides))
    if item.evaluated:
        rule += " (an expression, evaluated exactly)"
    return Reading(item.value, item.text, rule, candidates, tuple(asides), item.plain, item.plain and item.scale)
