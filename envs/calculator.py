"""The `calculator` tool's evaluator: arithmetic on numbers, read as a Python expression tree and walked by hand.

Nothing is `eval`ed: the tree may hold numbers, + - * / // % **, unary signs and parentheses, and anything else
(a name, a call, an attribute, a string) is an error. What could take unbounded time or memory is bounded before
it is computed: the expression's length, its depth, an exponent's size and every integer's size.
"""
from __future__ import annotations

import ast
import math
import operator

MAX_EXPRESSION_CHARS = 1000
MAX_DEPTH = 50
MAX_INT_DIGITS = 1000  # integers beyond this many digits are refused rather than computed
MAX_EXPONENT = 10_000

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    pass


def _digits(value: int) -> int:
    # bit_length is O(1); log10(2) ~ 0.30103 gives the decimal digits without converting to a string
    return int(abs(value).bit_length() * 0.30103) + 1


def _power(base: int | float, exponent: int | float) -> int | float:
    if isinstance(exponent, int) and isinstance(base, int):
        if abs(exponent) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {exponent} is too large (at most {MAX_EXPONENT})")
        if exponent > 0 and abs(base) > 1 and _digits(base) * exponent > MAX_INT_DIGITS:
            raise CalculatorError(f"the result would have more than {MAX_INT_DIGITS} digits")
    elif isinstance(exponent, (int, float)) and abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exponent:g} is too large (at most {MAX_EXPONENT})")
    return base ** exponent


def _evaluate(node: ast.AST, depth: int = 0) -> int | float:
    if depth > MAX_DEPTH:
        raise CalculatorError(f"the expression nests deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, depth + 1)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand, depth + 1))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            value = _power(left, right)
        elif isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, int) \
                and _digits(left) + _digits(right) > MAX_INT_DIGITS + 1:
            raise CalculatorError(f"the result would have more than {MAX_INT_DIGITS} digits")
        else:
            value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex):
            raise CalculatorError("the result is not a real number")
        return value
    what = type(node).__name__
    if isinstance(node, ast.Constant):
        what = type(node.value).__name__
    raise CalculatorError(f"only numbers, + - * / // % ** and parentheses are allowed (found {what})")


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression such as `(1234 * 5678) / 2`, or CalculatorError saying why not."""
    if not isinstance(expression, str):
        raise CalculatorError("the expression must be a string")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/").replace(",", "")
    if not text:
        raise CalculatorError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as error:
        raise CalculatorError(f"not an arithmetic expression: {getattr(error, 'msg', error)}") from None
    except RecursionError:
        raise CalculatorError(f"the expression nests deeper than {MAX_DEPTH} levels") from None
    try:
        return _evaluate(tree)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result is too large") from None


def format_number(value: int | float) -> str:
    """Integers as they are; floats without float noise where the value is whole (6.0 -> 6), else up to 12
    significant digits."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError("the result is not a finite number")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)
