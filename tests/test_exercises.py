"""voslab.exercises: checkers that never stop a notebook, say what is wrong in plain words, name
known mistakes, and record every verdict and prediction for the grader."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from voslab import exercises


@pytest.fixture(autouse=True)
def fresh_record():
    exercises.RECORD.clear()
    yield
    exercises.RECORD.clear()


def test_todo_raises_with_hint():
    with pytest.raises(NotImplementedError, match="count the pixels"):
        exercises.todo("count the pixels")


def test_check_passes_on_equal_and_records_it(capsys):
    assert exercises.check("double", lambda x: 2 * x, lambda x: x + x, [(np.arange(3),), (torch.ones(2),), 4.0])
    assert "all 3 cases" in capsys.readouterr().out
    assert exercises.record()["double"]["status"] == "ok"


def test_check_stub_is_not_done(capsys):
    assert exercises.check("stub", lambda x: exercises.todo("write it"), lambda x: x, [(1,)]) is False
    assert "write it" in capsys.readouterr().out and exercises.RECORD["stub"]["status"] == "not done"


@pytest.mark.parametrize("fn, ref, words", [
    (lambda x: x + 1e-3, lambda x: x, "values differ"),
    (lambda x: x[:-1], lambda x: x, "shape (10,), expected (11,)"),
    (lambda x: x > 0.5, lambda x: x > 0.4, "values differ"),
    (lambda x: {"a": x}, lambda x: {"a": x, "b": x}, "keys"),
    (lambda x: torch.as_tensor(x) * 2, lambda x: torch.as_tensor(x), "values differ"),
    (lambda x: np.asarray(x), lambda x: torch.as_tensor(x), "should be a torch.Tensor"),
    (lambda x: None, lambda x: x, "must `return`"),
])
def test_wrong_answers_return_false_with_the_reason_and_never_raise(fn, ref, words, capsys):
    assert exercises.check("bad", fn, ref, [(np.linspace(0, 1, 11),)]) is False
    out = capsys.readouterr().out
    assert words in out and "goes on with the library" in out
    assert exercises.RECORD["bad"]["status"] == "wrong"


def test_a_crashing_answer_is_recorded_not_raised(capsys):
    assert exercises.check("crash", lambda x: x.nope, lambda x: x, [(1,)]) is False
    assert "AttributeError" in capsys.readouterr().out and exercises.RECORD["crash"]["status"] == "error"


def test_random_cases_are_drawn_the_same_way_every_run():
    seen: list[list[float]] = []
    for _ in range(2):
        cases: list[float] = []
        exercises.check("rand", lambda x: cases.append(float(x)) or x, lambda x: x,
                        [], random_cases=lambda rng: rng.standard_normal(), n_random=4)
        seen.append(cases)
    assert seen[0] == seen[1] and len(seen[0]) == 4


def _correct_diffusion(q, m):
    b, c = q.shape[:2]
    P = torch.softmax(q.flatten(2).transpose(1, 2) @ m.flatten(2) / c ** 0.5, dim=-1)
    return (m.flatten(2) @ P.transpose(1, 2)).reshape(q.shape), P


def test_check_diffusion_accepts_a_correct_answer():
    assert exercises.check_diffusion("diffusion", _correct_diffusion)


@pytest.mark.parametrize("mistake", list(exercises.diffusion_mistakes()))
def test_check_diffusion_names_each_known_mistake(mistake, capsys):
    wrong = exercises.diffusion_mistakes()[mistake]
    same_size = (torch.randn(1, 4, 2, 3, dtype=torch.float64), torch.randn(1, 4, 3, 2, dtype=torch.float64))
    assert exercises.check_diffusion("diffusion", wrong, cases=[same_size]) is False
    assert mistake in capsys.readouterr().out and exercises.RECORD["diffusion"]["mistake"] == mistake


def test_check_diffusion_catches_the_output_on_the_memory_grid(capsys):
    def square_only(q, m):  # right whenever both grids are the same size; wrong layout otherwise
        out, P = _correct_diffusion(q, m)
        return out.flatten(2).reshape(*q.shape[:2], m.shape[2], -1) if out.numel() == m.numel() else out.view(-1), P

    assert exercises.check_diffusion("grid", square_only) is False
    assert "shape" in capsys.readouterr().out


def test_predictions_are_recorded_with_their_outcome(capsys):
    assert exercises.predict("sqrt", None, choices=["up", "down", "same"]) is False
    assert exercises.RECORD["sqrt"]["status"] == "not done"
    assert exercises.predict("sqrt", "sideways", choices=["up", "down", "same"]) is False
    assert exercises.predict("sqrt", "down", choices=["up", "down", "same"])
    exercises.reveal("sqrt", -0.02, "down")
    entry = exercises.record()["sqrt"]
    assert entry["prediction"] == "down" and entry["outcome"] == "down" and entry["correct"] is True
    assert "you predicted 'down'" in capsys.readouterr().out
