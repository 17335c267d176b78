"""The answer a statement gives, read by a few principles a careful human grader uses, not by position.

A statement is what an answer cue opens ("The answer is 64 pens, one for each of the 8 tables.", a `\\boxed{}`'s
content). It is read in steps, each a small function:

1. `clean`: compatibility forms (full-width digits, superscripts, vulgar fractions), markdown emphasis, LaTeX math
   delimiters and `\\text{}` wrappers become plain text.
2. `set_asides_apart`: what only supports the answer is removed before any rule looks for `=` or a number: a
   parenthesised aside (not the brackets of arithmetic), an opening subordinate clause ("After 3 days, ..."), and,
   once a value has been stated, a trailing one (", since ...", ", not 11", ", i.e. ...", "because ...").
3. Quantities are phrases (`_numbers`, `items`): digits with separators, signs, currency and scale words, number
   words ("twenty-five", "a dozen"), fractions and mixed numbers ("2 and 1/2"), one value each; a unit adjective
   ("200-meter") and a unit exponent (`m^2`) are never values; a compound quantity ("3 hours and 20 minutes") is
   one value in its smaller unit. Plain arithmetic (`4 + 9`, `5 times 6`) is evaluated exactly, chained through
   `=` / "is" / "equals" to the result it states; an expression with an unknown (`4 + x`) equals nothing.
4. The conclusion wins (`concluding_clause`, `predicate_value`, `in_modifier`): the statement's concluding clause
   ("..., so / therefore / which is / leaving X") is read: the result after its last `=`; else, when it opens
   with a value, that value, or the value its predicate asserts ("4 boxes of 6 eggs hold 24 eggs"); else the last
   value it states outside modifier phrases (prepositions, gerund, conditional and purpose phrases). Two different
   values offered as alternatives are a hedge (`_hedge`) and abstain; the same quantity restated in another
   notation ("0.6 or 60%") is one quantity. The question is not evidence about which value is asserted.

Every step is linear in the statement. `Reading` records what was read, the rule that decided and every candidate
considered, for `rl-lora grade --explain`.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from fractions import Fraction

from rewards.numbers import (MINUS, NUMBER_RE, UNREADABLE, WORD_NUMBER_RE, _Unreadable, normalize, value,
                             word_number_value)

Value = Fraction | _Unreadable

# -- 1. clean --------------------------------------------------------------------------------------------------------
_MATH_DELIMITERS = re.compile(r"\\[()\[\]]|\\displaystyle")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")


_EMPHASIS = re.compile(r"\*\*|__")


def clean(statement: str) -> str:
    statement = normalize(statement)
    statement = _MATH_DELIMITERS.sub(" ", _EMPHASIS.sub("", statement))
    return _TEXT_WRAPPER.sub(r" \1 ", statement)


# -- 2. asides -------------------------------------------------------------------------------------------------------
_PARENTHESES = re.compile(r"\([^()\n]*\)")
_OPERATOR_BEFORE = re.compile(rf"[+*×·÷/=–{re.escape(MINUS)}]\s*$")
_OPERATOR_AFTER = re.compile(rf"\s*[+*×·÷/=–{re.escape(MINUS)}]")
_OPENING_CLAUSE = re.compile(r"^\W*(?:since|because|as|if|when|after|before|given|with|at|in|for|by|from|over|to|"
                             r"during|within|once|using)\b[^,\n]*,", re.IGNORECASE)
_TRAILING_CLAUSE = re.compile(r"(?:,\s*|\s+)(?:i\.e\.|e\.g\.)|(?:(?:,\s*|\s+)(?:since|because|not|but not|rather than|"
                              r"instead of|ie|eg|where|check|verify|verifying|checking|based on|assuming)|"
                              r",\s*(?:as|that is|in other words))\b", re.IGNORECASE)


def set_asides_apart(statement: str) -> tuple[str, list[str]]:
    """The statement without its asides, and the asides (for --explain). A statement that is only an aside keeps
    it: "The answer is (6)" states 6."""
    asides: list[str] = []

    def aside_or_grouping(match: re.Match) -> str:
        if _OPERATOR_BEFORE.search(statement, max(0, match.start() - 4), match.start()) or \
                _OPERATOR_AFTER.match(statement, match.end()):
            return " " + match.group()[1:-1] + " "  # `56 × (1 / 2) = 28`: brackets of arithmetic, not an aside
        asides.append(match.group())
        return " "

    without = _PARENTHESES.sub(aside_or_grouping, statement)
    opening = _OPENING_CLAUSE.match(without)
    if opening and NUMBER_RE.search(without, opening.end()):
        asides.append(opening.group())
        without = without[opening.end():]
    stated = _first_stated(without)
    if stated is not None:  # a trailing clause only after a value has been stated (not "In 4 hours at 132 mph since")
        trailing = _TRAILING_CLAUSE.search(without, stated)
        if trailing:
            asides.append(without[trailing.start():])
            without = without[:trailing.start()]
    if not NUMBER_RE.search(without):
        return statement, []
    return without, asides


def _first_stated(text: str) -> int | None:
    """The end of the text's first number that stands outside a modifier phrase, or None."""
    for number in _numbers(text):
        if in_modifier(text, number) is None:
            return number.end
    return None


# -- 3. items --------------------------------------------------------------------------------------------------------
# Up to three unit words between a number and a symbol ("360 coins - 270 coins = 90 coins", "12 beetles/snake =").
_UNITS = (r"(?:(?!(?:or|and|so|then|is|are|was|were|but|if|which|that|because|since|not|to)\b)[A-Za-z][\w'’./]*"
          r"\s+){0,3}")
_OPERATOR = re.compile(rf"\s*(?:\\?%\s*)?(?:{_UNITS}(?P<op>[+*×·÷/–{re.escape(MINUS)}]|\bx\b|\\times|\\cdot|\\div)"
                       r"|(?P<word_op>\btimes\b|\bplus\b|\bminus\b|\bdivided by\b|\bmultiplied by\b))"
                       r"\s*(?:\\?\$\s?)?", re.IGNORECASE)
_EQUALS = re.compile(rf"\s*(?:\\?%\s*)?(?:{_UNITS}(?:=|\\approx|≈)|\bis equal to\b|\bequals\b|\bis\b|\bgives\b|"
                     r"\bmakes\b|→|\\Rightarrow)\s*(?:\\?\$\s?)?", re.IGNORECASE)
_SCALE = re.compile(r"\s*(?P<word>dozen|hundred|thousand|million|billion|trillion)\b", re.IGNORECASE)
SCALES = {"dozen": 12, "hundred": 100, "thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9,
          "trillion": 10 ** 12}
_POWER = re.compile(r"\s*\^\s*(?:\{\s*(?P<braced>[^{}]*)\}|(?P<bare>\d+))")
# `4 + x` has an unknown; `$7200/year` is a rate, not a division by a variable.
_UNKNOWN_OPERAND = re.compile(rf"\s*[+*×÷{re.escape(MINUS)}]\s*(?:[A-Za-z](?![A-Za-z])|\()")
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
    """Every number phrase of the text as one value, as a reader takes it (see `_digit_numbers`, `_word_numbers`):
    a number joined to a word by a hyphen is a unit adjective ("200-meter", "3-liter"), not a value, and a compound
    quantity ("3 hours and 20 minutes") is one value in its smaller unit, or unreadable."""
    found: list[Number] = []
    for number in sorted(_digit_numbers(text) + _word_numbers(text), key=lambda n: (n.start, -n.end)):
        if not found or number.start >= found[-1].end:  # "5 dozen": the word is part of the digits' phrase
            found.append(number)
    values = [n for n in found if not _UNIT_ADJECTIVE.match(text, n.end)]
    values = _compounds(text, values or found)
    words_only = [n for n in values if n.text.lower() == "one"]
    if words_only and len(values) > len(words_only):  # "one for each of the 8 tables": a pronoun, not a count
        values = [n for n in values if n.text.lower() != "one"]
    return values


_UNIT_ADJECTIVE = re.compile(r"-[A-Za-z]{2,}")


def _word_numbers(text: str) -> list[Number]:
    """Numbers written in words ("twelve", "twenty-five", "a dozen", "three hundred and five")."""
    found = []
    for match in WORD_NUMBER_RE.finditer(text):
        read = word_number_value(match.group())
        if read is not None:
            found.append(Number(match.start(), match.end(), match.group(), read))
    return found


# Units of one kind, each in the family's smallest unit: "3 hours and 20 minutes" is 200 minutes.
_UNIT_FAMILIES = {
    **{u: ("time", 1) for u in ("second", "seconds", "sec", "secs")},
    **{u: ("time", 60) for u in ("minute", "minutes", "min", "mins")},
    **{u: ("time", 3600) for u in ("hour", "hours", "hr", "hrs")},
    **{u: ("time", 86400) for u in ("day", "days")},
    **{u: ("time", 604800) for u in ("week", "weeks")},
    **{u: ("length", 1) for u in ("inch", "inches")},
    **{u: ("length", 12) for u in ("foot", "feet")},
    **{u: ("length", 36) for u in ("yard", "yards")},
    **{u: ("mass", 1) for u in ("ounce", "ounces", "oz")},
    **{u: ("mass", 16) for u in ("pound", "pounds", "lb", "lbs")},
    **{u: ("money", 1) for u in ("cent", "cents")},
    **{u: ("money", 100) for u in ("dollar", "dollars")},
}
_UNIT_THEN_AND = re.compile(r"\s+([A-Za-z]+)\s*,?\s*(?:and\s+)?")
_UNIT_AFTER = re.compile(r"\s+([A-Za-z]+)\b")


def _compounds(text: str, numbers: list[Number]) -> list[Number]:
    """`3 hours and 20 minutes`, `5 feet 3 inches`: one quantity. Its value is in the smaller unit (200 minutes; for
    money in dollars: "5 dollars and 50 cents" is 5.5); a compound of units not known here is unreadable."""
    merged: list[Number] = []
    index = 0
    while index < len(numbers):
        number = numbers[index]
        if index + 1 < len(numbers):
            after = numbers[index + 1]
            first = _UNIT_THEN_AND.fullmatch(text, number.end, after.start)
            second = _UNIT_AFTER.match(text, after.end)
            if first and second:
                big, small = (_UNIT_FAMILIES.get(w.group(1).lower()) for w in (first, second))
                if big and small and big[0] == small[0] and big[1] > small[1] and \
                        UNREADABLE not in (number.value, after.value):
                    total = number.value * big[1] + after.value * small[1]
                    read = total / 100 if big[0] == "money" else total / small[1]
                    merged.append(Number(number.start, second.end(), text[number.start:second.end()], read))
                    index += 2
                    continue
        merged.append(number)
        index += 1
    return merged


def _digit_numbers(text: str) -> list[Number]:
    """Numbers written in digits: exponents are not numbers of their own, a power or a scale word is part of its
    number, a minus followed by a space before it is its sign."""
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
            "÷": "/", "\\div": "/", "divided by": "/", "plus": "+", "minus": "-"}.get(op, op)


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
# The principles, each a small function: the conclusion wins (`concluding_clause`), a value in a modifier phrase is
# not what the sentence asserts (`in_modifier`), a statement that opens with a count asserts its predicate's value
# when it has one (`predicate_value`), alternatives are a hedge (`_hedge`), and what stays ambiguous abstains.
_ALTERNATIVES = re.compile(r"(?:\s*(?:,|;|/|\bor\b|\band\b|\bto\b|–|-|\\q?quad|\\?\$))+\s*(?:[A-Za-z]\s*=\s*)?",
                           re.IGNORECASE)
# A preposition (and its determiners) right before a number: "after 4 hours", "of the 8 tables", "to 3 friends".
_MODIFIER = re.compile(r"\b(?P<word>after|at|in|for|of|per|with|from|over|within|during|on|until|before|than|"
                       r"every|each|by|between|among|into|across|around|to|above|below|under|beyond)\s+"
                       r"(?:(?:the|a|an|only|just|another|its|their|his|her|those|these|"
                       r"first|last|next|all)\s+)*(?:\\?\$\s?)?$", re.IGNORECASE)
# "a profit of $60", "a total of 89": `of` after a noun that names a quantity gives that quantity, it modifies nothing.
_QUANTITY_NOUN = re.compile(r"\b(?:total|sum|profit|loss|cost|price|value|amount|average|difference|balance|"
                            r"change|distance|speed|rate|weight|length|height|width|area|perimeter|volume|score|"
                            r"salary|income|revenue|savings|bill|fee|tip|budget|debt|discount|increase|decrease|"
                            r"gain|deficit|surplus|result|answer|number|count|product|quotient)\s+$", re.IGNORECASE)
# A subordinate clause or a gerund phrase before the number: "if he sells 15", "after selling 12 shirts".
_SUBORDINATE = re.compile(r"\b(?:if|when|whenever|while|unless|once|whereas|assuming|provided|given)\s+"
                          r"(?:[^\s,;]+\s+){0,4}(?:\\?\$\s?)?$|"
                          r"\b(?:before|after|until|since|because|as soon as)\s+(?:he|she|they|it|we|you|i|his|her|"
                          r"their|its|our|my|the)\s+(?:[^\s,;]+\s+){0,4}(?:\\?\$\s?)?$|"
                          r"\b(?:after|before|by|without|from|for|in|on|upon|when|while)\s+[A-Za-z]+ing\s+"
                          r"(?:[^\s,;]+\s+){0,3}(?:\\?\$\s?)?$", re.IGNORECASE)
# A purpose infinitive after a stated value: "he needs 1 more to make the plants 12" (not "he needs to buy 5").
_PURPOSE = re.compile(r"\bto\s+[A-Za-z]+\s+(?:[^\s,;]+\s+){0,3}(?:\\?\$\s?)?$", re.IGNORECASE)
_FROM_BEFORE = re.compile(r"\bfrom\s+(?:\\?\$\s?)?$", re.IGNORECASE)
# Words that open the concluding clause: what follows is what the statement concludes.
_CONCLUSION = re.compile(r"(?:\b(?:so|therefore|thus|hence|which means|this means|that means|meaning|giving|"
                         r"making|leaving|bringing|resulting in|for a total of|which is|which makes|which gives|"
                         r"which leaves|that leaves|in the end)\b|=>|⇒)",
                         re.IGNORECASE)
# A predicate verb right before a value: "4 boxes of 6 eggs hold 24", "7 cups cost $14", "15 apples are left".
_PREDICATE = re.compile(r"\b(?:is|are|was|were|be|been|has|have|had|make|makes|made|cost|costs|hold|holds|held|"
                        r"weigh|weighs|weighed|contain|contains|give|gives|gave|equal|equals|total|totals|totaled|"
                        r"come to|comes to|came to|add up to|adds up to|amount to|amounts to|earn|earns|earned|"
                        r"need|needs|needed|take|takes|took|get|gets|got|leave|leaves|yield|yields|produce|"
                        r"produces|sell for|sells for|sold for|pay|pays|paid|spend|spends|spent|save|saves|saved|"
                        r"buy|buys|bought|become|becomes|became|reach|reaches|reached)\s+"
                        r"(?:(?:a|an|the|only|just|exactly|about|another|total|of|up|to|in|all|altogether|now|"
                        r"then|still|left|over)\s+)*(?:\\?\$\s?)?$", re.IGNORECASE)
_WINDOW = 80  # characters looked back from a number for the phrase it stands in (bounded: linear in the statement)


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
    restated: Value | None = None  # the same quantity as the statement restates it right after ("0.6 or 60%": 60)


def in_modifier(text: str, item: Item, since: int = 0, previous_end: int | None = None) -> str | None:
    """The word that makes `item` a modifier of the sentence rather than what it asserts, or None: a preposition
    before it ("after 4 hours", "of the 8 tables"; not "a total of 89"), a subordinate clause or gerund phrase
    ("if he sells 15", "before his average goes above 60", "after selling 12 shirts"), or a purpose infinitive
    after a value already stated (`previous_end`: "1 more to make the plants 12")."""
    window = max(since, item.start - _WINDOW)
    match = _MODIFIER.search(text, window, item.start)
    if match and not (match.group("word").lower() == "of" and _QUANTITY_NOUN.search(text, window, match.start())):
        return match.group("word").lower()
    clause = _SUBORDINATE.search(text, window, item.start)
    if clause:
        return clause.group().split()[0].lower()
    purpose = _PURPOSE.search(text, window, item.start)
    if purpose and previous_end is not None and previous_end <= purpose.start():
        return "to"
    return None


def concluding_clause(text: str, found: list[Item]) -> int:
    """Where the statement's concluding clause starts: after its last conclusion word ("..., so", "therefore",
    "which is") that a value follows, and after its first value; 0 when it has none (the whole statement)."""
    start = 0
    for match in _CONCLUSION.finditer(text, found[0].end):
        if match.end() <= found[-1].start:
            start = match.end()
    return start


def predicate_value(text: str, found: list[Item], first: int, since: int) -> int | None:
    """In a clause that opens with a count ("4 boxes of 6 eggs hold 24 eggs"), the value its predicate asserts: a
    later value in the same clause (no comma or semicolon before it), right after a predicate verb, not in a
    modifier phrase. None when the clause asserts no other value ("64 pens, one for each of the 8 tables")."""
    for index in range(first + 1, len(found)):
        item = found[index]
        between = text[found[first].end:item.start]
        if "," in between or ";" in between:
            return None
        if _PREDICATE.search(text, max(since, item.start - _WINDOW), item.start) and \
                not in_modifier(text, item, since):
            return index
    return None


def _hedge(text: str, found: list[Item]) -> tuple[Item, Item] | None:
    """Two different values given as alternatives, each the other's neighbour, separated only by a list or range
    word (`from A to B` is a change, not a hedge). The same value in two notations ("1/4 or 25%") is a restatement."""
    for left, right in zip(found, found[1:]):
        gap = text[left.end:right.start]
        if not _ALTERNATIVES.fullmatch(gap) or _same_value(text, left, right):
            continue
        if _COMMA_ONLY.fullmatch(gap) and not _LIST_GOES_ON.match(text, right.end):
            continue  # "30, 12 of them from the first part": a remark about the value, not an alternative to it
        if gap.strip().lower() == "to" and _FROM_BEFORE.search(text, max(0, left.start - 20), left.start):
            continue
        return left, right
    return None


_COMMA_ONLY = re.compile(r"\s*[,;]\s*")
# After the last value of a list of alternatives: at most a unit word, then the end of the statement or the list.
_LIST_GOES_ON = re.compile(r"\s*(?:\\?%|[A-Za-z]+\.?)?\s*(?:$|[,;.!?)}\]]|or\b|and\b)", re.IGNORECASE)
_PERCENT_AFTER = re.compile(r"\s*(?:\\?%|percent\b)", re.IGNORECASE)


def _same_value(text: str, left: Item, right: Item) -> bool:
    """Equal values, or one a percent of the other's value ("1/4 or 25%", "0.5, i.e. 50%")."""
    if left.value == right.value:
        return True
    if UNREADABLE in (left.value, right.value):
        return False
    for a, b in ((left, right), (right, left)):
        if _PERCENT_AFTER.match(text, b.end) and not _PERCENT_AFTER.match(text, a.end) and b.value / 100 == a.value:
            return True
    return False


_STARTS_WITH_NUMBER = re.compile(rf"^[\s*:$\\{{]*(?:[{MINUS}–]\s*)?(?:\\?\$\s?)?(?:\d|\.\d|\\[dt]?frac)")
_VARIABLE_ALTERNATIVE = re.compile(r"\s*,?\s*(?:or|and)\s+[A-Za-z]\w*\s*=\s*", re.IGNORECASE)
_ROUNDED = re.compile(r"[.%\s]*(?:[A-Za-z/]+\s*)?[,;]?\s*(?:which\s+)?(?:is\s+)?(?:rounds?|rounded|rounding)"
                      r"(?:\s+(?:up|down))?"
                      r"\s+to\s+(?:about\s+)?", re.IGNORECASE)


def _restated(text: str, found: list[Item], chosen: int) -> Value | None:
    """The value of the item right after the chosen one when it restates it in another notation ("0.60 or 60%")."""
    if chosen + 1 < len(found):
        after = found[chosen + 1]
        if _ALTERNATIVES.fullmatch(text, found[chosen].end, after.start) and after.value != found[chosen].value \
                and _same_value(text, found[chosen], after):
            return after.value
    return None


def _opens_with_number(text: str, start: int, first: Item) -> bool:
    """The clause from `start` opens with its first value (a number, or a number in words)."""
    return _STARTS_WITH_NUMBER.match(text[start:first.end]) is not None or \
        text[start:first.start].strip(" \t\n*:$\\{") == ""


def _hedge_reading(text: str, pair: tuple[Item, Item], asides: tuple[str, ...]) -> Reading:
    left, right = pair
    return Reading(UNREADABLE, text[left.start:right.end].strip(), "hedge: two different values as alternatives",
                   tuple(Candidate(i.text, i.value, "alternative") for i in pair), asides)


def _stated_result(tail: str, asides: tuple[str, ...]) -> Reading | None:
    """After the last `=` of the concluding clause: the first value there ("= 50 miles for 5 days" is 50), a rounding
    of it if the statement gives one ("= 15.36 minutes, which rounds down to 15"), a hedge if it lists different
    values. None when nothing after the `=` is a number."""
    found = items(tail)
    if not found:
        return None
    hedge = _hedge(tail, found)
    if hedge:
        return _hedge_reading(tail, hedge, asides)
    chosen, rule = 0, "the result after the last '=' of the concluding clause"
    rounded = _ROUNDED.match(tail, found[0].end)
    if rounded and len(found) > 1 and found[1].start == rounded.end():
        chosen, rule = 1, "the rounding the statement gives of its result"
    notes = {chosen: "read"}
    item = found[chosen]
    candidates = tuple(Candidate(i.text, i.value, notes.get(n, "not the first after '='"))
                       for n, i in enumerate(found))
    return Reading(item.value, item.text, rule, candidates, asides, item.plain, item.plain and item.scale,
                   _restated(tail, found, chosen))


def read_statement(statement: str, question_numbers: frozenset[Fraction] = frozenset()) -> Reading:
    """The answer `statement` gives (see the module's docstring). `question_numbers`: the quantities the question
    states, when known; used only to refuse an unevaluated expression made of them ("What is 23 + 45?" -> "The
    answer is 23 + 45."), never to choose between the values a statement gives.

    The statement's concluding clause is read (the whole statement when it has none): the result of its last
    computation; else, when the clause opens with a value, that value (or its predicate's: "4 boxes hold 24 eggs");
    else the last value it states outside modifier phrases."""
    text, asides_list = set_asides_apart(clean(statement))
    asides = tuple(asides_list)
    found = items(text)
    if not found:
        return Reading(None, "", "no number in the statement", asides=asides)
    if _VARIABLE_ALTERNATIVE.search(text):  # x = 3 or x = 5: a hedge across the `=` signs
        for left, right in zip(found, found[1:]):
            if _VARIABLE_ALTERNATIVE.fullmatch(text, left.end, right.start) and left.value != right.value:
                return _hedge_reading(text, (left, right), asides)
    since = concluding_clause(text, found)
    equals = max(text.rfind("=", since), text.rfind("≈", since))
    if equals >= 0:  # an `=` chain in the concluding clause states its result after its last `=`
        reading = _stated_result(text[equals + 1:], asides)
        if reading is not None:
            return reading
    pool = [i for i, item in enumerate(found) if item.start >= since]
    hedge = _hedge(text, [found[i] for i in pool])
    if hedge:
        return _hedge_reading(text, hedge, asides)
    notes: dict[int, str] = {i: "before the concluding clause" for i in range(pool[0])}
    where = "its concluding clause" if since else "the statement"
    computations = [i for i in pool if found[i].computed]
    if computations:
        chosen, rule = computations[-1], f"the result of the last computation of {where}"
        for i in pool:
            if i != chosen:
                notes[i] = "not the last computation's result"
        rounded = _ROUNDED.match(text, found[chosen].end)
        if rounded and chosen + 1 < len(found) and found[chosen + 1].start == rounded.end():
            notes[chosen], chosen, rule = "rounded after", chosen + 1, "the rounding the statement gives of its result"
    elif _opens_with_number(text, since, found[pool[0]]):
        chosen, rule = pool[0], f"the value {where} opens with"
        predicate = predicate_value(text, found, pool[0], since)
        if predicate is not None:
            notes[chosen] = "the subject's count: the clause asserts its predicate's value"
            chosen, rule = predicate, f"the value the predicate of {where} asserts"
        for i in pool:
            notes.setdefault(i, f"after the value {where} opens with")
    else:
        stated = []
        for index in pool:
            previous_end = found[index - 1].end if index > pool[0] else None
            modifier = in_modifier(text, found[index], since, previous_end)
            if modifier:
                notes[index] = f"skipped: in a modifier phrase ({modifier!r} before it)"
            else:
                stated.append(index)
        if stated:
            chosen, rule = stated[-1], f"the last value {where} states"
            for i in stated[:-1]:
                notes[i] = "not the last value stated"
        else:
            chosen, rule = pool[-1], f"every value of {where} is in a modifier phrase: the last"
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
                       candidates, asides)
    if item.evaluated:
        rule += " (an expression, evaluated exactly)"
    return Reading(item.value, item.text, rule, candidates, asides, item.plain, item.plain and item.scale,
                   _restated(text, found, chosen))
