import threading
import time

import pytest

from envs.sample import Sample
from rewards.math import math_reward

PATHOLOGICAL = ("2", "$\\boxed{9^{9^{9^{9}}} - 9^{9^{9^{9}}} + 2}$")


def grade(reference: str, completion: str, **kw) -> float:
    return math_reward(completion, Sample("m", "q", reference), **kw)


@pytest.mark.parametrize("reference, completion", [
    ("\\frac{1}{2}", "so the answer is $\\boxed{0.5}$"),
    ("\\dfrac{3}{4}", "$\\boxed{\\frac34}$"),
    ("2\\sqrt{2}", "$\\boxed{\\sqrt{8}}$"),
    ("(1,3]", "$\\boxed{(1, 3]}$"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "$\\boxed{(3,\\frac{\\pi}{2})}$"),
    ("\\text{(C)}", "$\\boxed{C}$"),
    ("30^\\circ", "$\\boxed{30}$"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "$\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}$"),
    ("3\\sqrt{3}", "$\\boxed{3 \\sqrt 3}$"),
    ("\\text{Evelyn}", "$\\boxed{\\text{Evelyn}}$"),
])
def test_equivalent_answers_score_one(reference, completion):
    assert grade(reference, completion) == 1.0


@pytest.mark.parametrize("reference, completion", [
    ("\\frac{1}{2004!}", "$\\boxed{\\frac{1}{2006!}}$"),  # numerically ~0 apart, exactly different
    ("\\pm 2021", "$\\boxed{2021}$"),
    ("(1,3]", "$\\boxed{[1,3]}$"),
    ("5", "I could not solve it."),
    ("\\frac{1}{3}", "$\\boxed{0.3}$"),
])
def test_different_answers_score_zero(reference, completion):
    assert grade(reference, completion) == 0.0


def _timed(call):
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def test_pathological_answer_is_cut_off_in_main_thread():
    grade("1", "$\\boxed{1}$")  # the grader's process is started outside the timed call
    value, seconds = _timed(lambda: grade(*PATHOLOGICAL, timeout=2.0))
    assert value == 0.0
    assert seconds < 6.0
    assert grade("\\frac{1}{2}", "$\\boxed{0.5}$") == 1.0  # and the grader works again after the kill


def test_grades_from_a_thread_with_timeout():
    results = {}

    def work():
        results["ok"] = grade("\\frac{1}{2}", "$\\boxed{0.5}$")
        results["pathological"] = _timed(lambda: grade(*PATHOLOGICAL, timeout=2.0))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert results["ok"] == 1.0
    value, seconds = results["pathological"]
    assert value == 0.0 and seconds < 6.0


def test_grades_inside_a_ray_actor(ray_cluster):
    ray = ray_cluster

    @ray.remote(num_cpus=0)
    class Grader:
        def grade(self, reference, completion, timeout):
            start = time.perf_counter()
            value = math_reward(completion, Sample("m", "q", reference), timeout=timeout)
            return value, time.perf_counter() - start

    actor = Grader.remote()
    assert ray.get(actor.grade.remote("\\frac{1}{2}", "$\\boxed{0.5}$", 30.0))[0] == 1.0
    value, seconds = ray.get(actor.grade.remote(*PATHOLOGICAL, 2.0))
    assert value == 0.0 and seconds < 6.0
    ray.kill(actor)
