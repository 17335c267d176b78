"""User tools as a user would write them, imported by name (`tests.tool_fixtures:...`) in the tests."""
import time


def lookup(city: str, year: int = 2024) -> str:
    """Look up a city's population.

    Args:
        city: the city's name
        year: the census year
    """
    return f"{city} had 1000 people in {year}"


def hangs(seconds: float) -> str:
    """Sleep, then answer (a tool that hangs).

    Args:
        seconds: how long
    """
    time.sleep(seconds)
    return "woke up"


def crashes(code: int) -> str:
    """Exit the process it runs in (a tool that crashes).

    Args:
        code: the exit status
    """
    import os

    os._exit(code)


def untyped(city):
    """No type hints."""
    return city


def huge(megabytes: int) -> str:
    """Answer with `megabytes` MB of text (a tool whose answer is far past any token budget).

    Args:
        megabytes: how much
    """
    line = "The cat sat on the mat, and 1234 * 5678 = 7006652.\n"
    return (line * (megabytes * 1_000_000 // len(line) + 1))[:megabytes * 1_000_000]
