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
