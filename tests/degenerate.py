"""1 MB degenerate completions (what a small policy emits up to max_tokens) for the graders' linear-time tests."""


def repeat_to_1mb(unit: str, size: int = 1 << 20) -> str:
    return (unit * (size // len(unit) + 1))[:size]


# Shapes every grader meets: runs of one character or cue, which backtracking patterns go quadratic on.
COMMON_1MB = {
    "newlines": repeat_to_1mb("\n"),
    "spaces": repeat_to_1mb(" "),
    "A_colon": repeat_to_1mb("A:"),
    "digits": repeat_to_1mb("7"),
    "digit_spaces": repeat_to_1mb("1 "),
    "boxed_open": repeat_to_1mb("\\boxed{"),
}
