"""Science environment: generated answers recomputed independently, feedback names format/unit/magnitude."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from creditlens.envs.science import REACTIONS, TEMPLATES, ScienceEnv, formula_counts, molar_mass


@pytest.fixture(scope="module")
def env() -> ScienceEnv:
    return ScienceEnv()


@pytest.fixture(scope="module")
def train(env) -> list:
    return env.problems("train", n=3000, seed=0)


def numbers(problem) -> list[float]:
    text = problem.prompt[1]["content"].split("(")[0] if problem.reference["template"] == "conversion" \
        else problem.prompt[1]["content"]
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", re.sub(r"\^-?\d+", "", text))]


def answer(problem, factor: float = 1.0, unit: str | None = None) -> str:
    return f"Working...\nAnswer: {problem.reference['value'] * factor:.6g} {unit or problem.reference['unit']}"


def test_thousands_of_distinct_problems_over_all_templates(env, train):
    texts = {p.prompt[1]["content"] for p in train}
    assert len(texts) == 3000 and len({p.id for p in train}) == 3000
    assert set(Counter(p.reference["template"] for p in train)) == set(TEMPLATES) and len(TEMPLATES) >= 8
    evals = env.problems("eval", n=500, seed=0)
    assert not texts & {p.prompt[1]["content"] for p in evals}
    assert [p.id for p in env.problems("train", n=50, seed=0)] == [p.id for p in train[:50]]
    assert [p.id for p in env.problems("train", n=50, seed=1)] != [p.id for p in train[:50]]


def test_molar_masses_and_reactions_against_hand_counts():
    assert formula_counts("Ca(OH)2") == Counter({"Ca": 1, "O": 2, "H": 2})
    assert formula_counts("Al2(SO4)3") == Counter({"Al": 2, "S": 3, "O": 12})
    assert molar_mass("H2O") == pytest.approx(2 * 1.008 + 15.999)
    assert molar_mass("C6H12O6") == pytest.approx(6 * 12.011 + 12 * 1.008 + 6 * 15.999)
    for reactants, products in REACTIONS:
        left, right = Counter(), Counter()
        for side, terms in ((left, reactants), (right, products)):
            for coefficient, formula in terms:
                for element, n in formula_counts(formula).items():
                    side[element] += coefficient * n
        assert left == right, (reactants, products)


def test_answers_recomputed_from_the_question_text(train):
    recompute = {
        "gas_pressure": lambda n, t, v: n * 8.314 * t / v,
        "distance": lambda v0, a, t: v0 * t + a * t * t / 2,
        "free_fall": lambda h, g: math.sqrt(2 * h / g),
        "kinetic_energy": lambda m, v: m * v * v / 2 / 1000,
        "ohm": lambda volts, ohms: volts / ohms * 1000,
        "projectile": lambda v, angle, g: v * v * math.sin(2 * math.radians(angle)) / g,
    }
    seen = Counter()
    for problem in train:
        template = problem.reference["template"]
        if template in recompute:
            values = numbers(problem)
            if template == "gas_pressure":
                values = values[:3]
            expected = recompute[template](*values)
            assert problem.reference["value"] == pytest.approx(expected, rel=1e-9), problem.prompt[1]["content"]
            seen[template] += 1
    assert set(seen) == set(recompute)


def test_reference_answers_pass(env, train):
    for problem in train:
        outcome = env.verify(problem, answer(problem))
        assert outcome.passed and outcome.reward == 1.0 and outcome.feedback == "", problem.prompt


def test_corruptions_name_the_defect(env, train):
    problem = next(p for p in train if p.reference["unit"] == "kPa")
    assert env.verify(problem, answer(problem, 1.005)).passed
    assert env.verify(problem, "Answer: **{:.5g} kilopascals**".format(problem.reference["value"])).passed
    off = env.verify(problem, answer(problem, 1000))
    assert off.feedback.startswith("Magnitude:") and "factor of 10^3 (too large)" in off.feedback
    small = env.verify(problem, answer(problem, 0.7))
    assert small.feedback.startswith("Magnitude:") and small.feedback.endswith("is too small by 30%.")
    assert env.verify(problem, answer(problem, -1)).feedback.startswith("Magnitude:")
    in_pa = env.verify(problem, answer(problem, 1000, "Pa"))
    assert in_pa.feedback == "Unit: the question asks for kPa, the answer is in Pa (the value is right)."
    wrong_kind = env.verify(problem, answer(problem, 1, "m/s"))
    assert wrong_kind.feedback == "Unit: m/s is a speed, but the question asks for a pressure in kPa."
    bare = env.verify(problem, f"Answer: {problem.reference['value']:.5g}")
    assert bare.feedback.startswith("Unit: the answer") and "has no unit" in bare.feedback
    unknown = env.verify(problem, f"Answer: {problem.reference['value']:.5g} blorps")
    assert unknown.feedback.startswith("Unit: `blorps` is not a unit")
    assert env.verify(problem, f"The pressure is {problem.reference['value']:.5g} kPa").feedback.startswith("Format:")
    assert env.verify(problem, "Answer: about a hundred kPa").feedback.startswith("Format:")
    for outcome in (off, small, in_pa, wrong_kind, bare, unknown):
        assert not outcome.passed and outcome.reward == 0.0


def test_number_formats(env, train):
    problem = next(p for p in train if p.reference["unit"] == "m")
    value = problem.reference["value"]
    mantissa, exponent = f"{value:.6e}".split("e")
    for text in (f"{value:,.4f} m", f"{mantissa} × 10^{int(exponent)} m", f"{value:.6e} meters", f"{value:.6g}m"):
        assert env.verify(problem, f"Answer: {text}").passed, text


def test_short_variant_and_template_subset(train):
    short = ScienceEnv(short=True, templates=("ohm", "conversion")).problems("train", n=200, seed=0)
    assert {p.reference["template"] for p in short} == {"ohm", "conversion"}
    assert {p.prompt[0]["content"] for p in short} == {"Reply with one line only, of the form `Answer: <number> "
                                                       "<unit>`, and nothing else."}
    same = ScienceEnv(short=True).problems("train", n=50, seed=0)
    assert [p.prompt[1:] for p in same] == [p.prompt[1:] for p in train[:50]]
    assert [p.reference for p in same] == [p.reference for p in train[:50]]
    with pytest.raises(ValueError, match="unknown template 'ohms'"):
        ScienceEnv(templates=("ohms",))


def test_readout_template_restates_the_given_value():
    env = ScienceEnv(short=True, templates=("readout",))
    problems = env.problems("train", n=50, seed=0)
    for problem in problems:
        value = float(re.search(r" as (\S+) ", problem.prompt[1]["content"]).group(1))
        assert problem.reference["value"] == value
        assert f"as {value:g} {problem.reference['unit']}." in problem.prompt[1]["content"]
        assert env.verify(problem, f"Answer: {value:g} {problem.reference['unit']}").passed
        assert not env.verify(problem, f"Answer: {value * 2:g} {problem.reference['unit']}").passed
    assert "readout" not in {p.reference["template"] for p in ScienceEnv().problems("train", n=500, seed=0)}


def test_lenient_grades_the_last_quantity_without_an_answer_line():
    strict = ScienceEnv(short=True, templates=("readout",))
    lenient = ScienceEnv(short=True, templates=("readout",), lenient=True)
    problem = lenient.problems("train", n=1, seed=0)[0]
    value, unit = problem.reference["value"], problem.reference["unit"]
    prose = f"It was 3 {unit} before; now it is {value:g} {unit}."
    assert lenient.verify(problem, prose).passed and not strict.verify(problem, prose).passed
    assert "too large" in lenient.verify(problem, f"It is {value * 2:g} {unit}, I think.").feedback
    assert lenient.verify(problem, "no quantity here").feedback.startswith("Format:")
    assert not lenient.verify(problem, f"Answer: {value * 2:g} {unit}\nso {value:g} {unit}").passed


def test_reveal_appends_the_expected_answer_line_to_failures_only():
    plain = ScienceEnv(short=True, templates=("readout",), lenient=True)
    reveal = ScienceEnv(short=True, templates=("readout",), lenient=True, reveal=True)
    problem = reveal.problems("train", n=1, seed=3)[0]
    value, unit = problem.reference["value"], problem.reference["unit"]
    given = re.search(r" as (\S+) ", problem.prompt[1]["content"]).group(1)
    for response in (f"Answer: {value * 3:g} {unit}", "no quantity", f"Answer: {value:g} s"):
        before, after = plain.verify(problem, response), reveal.verify(problem, response)
        assert not after.passed and after.feedback == f"{before.feedback} Expected: `Answer: {given} {unit}`."
    assert reveal.verify(problem, f"Answer: {given} {unit}") == plain.verify(problem, f"Answer: {given} {unit}")
    assert reveal.verify(problem, f"Answer: {given} {unit}").passed
    assert reveal.problems("train", n=20, seed=0) == plain.problems("train", n=20, seed=0)
