"""Science: seeded, procedurally generated chemistry and physics questions with numeric answers.

Twelve templates (molar mass, moles from mass, reaction stoichiometry, molarity, ideal-gas pressure
and volume, kinematics distance, free-fall time, projectile range, kinetic energy, Ohm's law, unit
conversion) draw compounds, reactions and values from a seeded ``random.Random``; the space holds
far more than thousands of distinct questions. The model ends with ``Answer: <number> <unit>``; the
value must be within ``rel_tol`` of the truth, in the unit the question asks for. Feedback says
whether the format, the unit (missing, unknown, wrong kind, or right kind but not the one asked) or
the magnitude (wrong sign, off by a power of ten, or too large/small by a percentage) was wrong;
with ``reveal=True`` it also states the expected answer line, as a failing unit test prints the
expected value. Reward 1/0.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from creditlens.envs.base import SPLITS, Environment, Outcome, Problem

SYSTEM = ("Solve the problem. Show brief working, then end with a final line of the form "
          "`Answer: <number> <unit>`.")
SHORT_SYSTEM = "Reply with one line only, of the form `Answer: <number> <unit>`, and nothing else."

ATOMIC_MASS = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "Na": 22.990, "Mg": 24.305,
               "Al": 26.982, "P": 30.974, "S": 32.06, "Cl": 35.45, "K": 39.098, "Ca": 40.078,
               "Fe": 55.845, "Cu": 63.546, "Zn": 65.38, "Ag": 107.87}
COMPOUNDS = ["H2O", "CO2", "NaCl", "C6H12O6", "NH3", "CH4", "H2SO4", "CaCO3", "KCl", "NaOH", "HCl",
             "C2H5OH", "Fe2O3", "MgO", "Al2O3", "CuSO4", "Ca(OH)2", "Mg(OH)2", "NaHCO3", "C3H8", "SO2",
             "NO2", "AgNO3", "ZnCl2", "K2SO4", "Na2CO3", "HNO3", "H3PO4", "Al(OH)3", "CaCl2",
             "C12H22O11", "KNO3", "Na2SO4", "CuO", "ZnO"]
# Balanced reactions: (reactants, products), each a list of (coefficient, formula).
REACTIONS = [
    ([(2, "H2"), (1, "O2")], [(2, "H2O")]),
    ([(1, "CH4"), (2, "O2")], [(1, "CO2"), (2, "H2O")]),
    ([(1, "C3H8"), (5, "O2")], [(3, "CO2"), (4, "H2O")]),
    ([(1, "N2"), (3, "H2")], [(2, "NH3")]),
    ([(1, "CaCO3")], [(1, "CaO"), (1, "CO2")]),
    ([(2, "Na"), (1, "Cl2")], [(2, "NaCl")]),
    ([(4, "Fe"), (3, "O2")], [(2, "Fe2O3")]),
    ([(2, "Al"), (3, "Cl2")], [(2, "AlCl3")]),
    ([(1, "C6H12O6"), (6, "O2")], [(6, "CO2"), (6, "H2O")]),
    ([(1, "HCl"), (1, "NaOH")], [(1, "NaCl"), (1, "H2O")]),
    ([(2, "Mg"), (1, "O2")], [(2, "MgO")]),
    ([(1, "Zn"), (2, "HCl")], [(1, "ZnCl2"), (1, "H2")]),
    ([(2, "H2O2")], [(2, "H2O"), (1, "O2")]),
    ([(1, "C2H5OH"), (3, "O2")], [(2, "CO2"), (3, "H2O")]),
    ([(2, "KClO3")], [(2, "KCl"), (3, "O2")]),
    ([(1, "H2SO4"), (2, "NaOH")], [(1, "Na2SO4"), (2, "H2O")]),
]
R = 8.314  # J/(mol K)
G = 9.81  # m/s^2

# symbol -> (dimension, factor to SI)
UNITS = {
    "kg": ("mass", 1.0), "g": ("mass", 1e-3), "mg": ("mass", 1e-6), "lb": ("mass", 0.45359237),
    "mol": ("amount", 1.0), "mmol": ("amount", 1e-3),
    "g/mol": ("molar mass", 1e-3), "kg/mol": ("molar mass", 1.0),
    "L": ("volume", 1e-3), "mL": ("volume", 1e-6), "m^3": ("volume", 1.0), "cm^3": ("volume", 1e-6),
    "gal": ("volume", 3.785411784e-3),
    "Pa": ("pressure", 1.0), "kPa": ("pressure", 1e3), "atm": ("pressure", 101325.0),
    "bar": ("pressure", 1e5), "mmHg": ("pressure", 133.322),
    "m": ("length", 1.0), "km": ("length", 1e3), "cm": ("length", 1e-2), "mm": ("length", 1e-3),
    "mi": ("length", 1609.344), "ft": ("length", 0.3048),
    "s": ("time", 1.0), "ms": ("time", 1e-3), "min": ("time", 60.0), "h": ("time", 3600.0),
    "m/s": ("speed", 1.0), "km/h": ("speed", 1 / 3.6), "mph": ("speed", 0.44704),
    "m/s^2": ("acceleration", 1.0),
    "J": ("energy", 1.0), "kJ": ("energy", 1e3), "cal": ("energy", 4.184), "kcal": ("energy", 4184.0),
    "mol/L": ("concentration", 1.0), "M": ("concentration", 1.0), "mmol/L": ("concentration", 1e-3),
    "A": ("current", 1.0), "mA": ("current", 1e-3),
}
ALIASES = {
    "grams": "g", "gram": "g", "kilograms": "kg", "kilogram": "kg", "milligrams": "mg", "pounds": "lb",
    "moles": "mol", "mole": "mol", "liters": "L", "litres": "L", "liter": "L", "litre": "L", "l": "L",
    "milliliters": "mL", "millilitres": "mL", "ml": "mL", "pascals": "Pa", "pa": "Pa", "kilopascals": "kPa",
    "kpa": "kPa", "atmospheres": "atm", "meters": "m", "metres": "m", "meter": "m", "metre": "m",
    "kilometers": "km", "kilometres": "km", "miles": "mi", "feet": "ft", "seconds": "s", "second": "s",
    "sec": "s", "secs": "s", "minutes": "min", "hours": "h", "hr": "h", "joules": "J", "joule": "J",
    "j": "J", "kilojoules": "kJ", "kj": "kJ", "kcal": "kcal", "calories": "cal", "amperes": "A",
    "amps": "A", "amp": "A", "a": "A", "milliamperes": "mA", "ma": "mA", "kph": "km/h", "km/hr": "km/h",
    "ms^-1": "m/s", "m/s2": "m/s^2", "ms^-2": "m/s^2", "gmol^-1": "g/mol", "g/mole": "g/mol",
    "mol/l": "mol/L", "moll^-1": "mol/L", "mol/dm^3": "mol/L", "m3": "m^3", "cm3": "cm^3", "mmhg": "mmHg",
}
DIMENSION_WORDS = {"mass": "a mass", "amount": "an amount of substance", "molar mass": "a molar mass",
                   "volume": "a volume", "pressure": "a pressure", "length": "a length", "time": "a time",
                   "speed": "a speed", "acceleration": "an acceleration", "energy": "an energy",
                   "concentration": "a concentration", "current": "a current"}
NUMBER = r"[-+−]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:\s*(?:[x×*]|\\times)\s*10\s*(?:\^|\*\*)\s*\{?[-+−]?\d+\}?)?"


def formula_counts(formula: str) -> Counter:
    """Element counts of a formula such as ``Ca(OH)2``."""
    counts: Counter = Counter()
    for group, group_n, element, element_n in re.findall(r"\(([^)]*)\)(\d*)|([A-Z][a-z]?)(\d*)", formula):
        if group:
            for key, value in formula_counts(group).items():
                counts[key] += value * int(group_n or 1)
        else:
            counts[element] += int(element_n or 1)
    return counts


def molar_mass(formula: str) -> float:
    """Molar mass in g/mol from :data:`ATOMIC_MASS`."""
    return sum(ATOMIC_MASS[element] * n for element, n in formula_counts(formula).items())


def _sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


def _masses(formulas) -> str:
    elements = sorted({e for f in formulas for e in formula_counts(f)})
    return "Atomic masses (g/mol): " + ", ".join(f"{e} {ATOMIC_MASS[e]}" for e in elements) + "."


def _molar_mass(rng):
    f = rng.choice(COMPOUNDS)
    return f"What is the molar mass of {f}? {_masses([f])}", molar_mass(f), "g/mol"


def _moles(rng):
    f, m = rng.choice(COMPOUNDS), _sig(rng.uniform(1, 500))
    return f"How many moles are in {m:g} g of {f}? {_masses([f])}", m / molar_mass(f), "mol"


def _stoichiometry(rng):
    reactants, products = rng.choice(REACTIONS)
    (a, given), (b, wanted) = rng.choice(reactants), rng.choice(products)
    m = _sig(rng.uniform(1, 200))
    equation = " + ".join(f"{c} {f}" if c > 1 else f for c, f in reactants) + " -> " + \
        " + ".join(f"{c} {f}" if c > 1 else f for c, f in products)
    answer = m / molar_mass(given) * b / a * molar_mass(wanted)
    return (f"For the reaction {equation}, how many grams of {wanted} form from {m:g} g of {given} "
            f"with every other reactant in excess? {_masses([given, wanted])}"), answer, "g"


def _molarity(rng):
    f, m, v = rng.choice(COMPOUNDS), _sig(rng.uniform(0.5, 100)), _sig(rng.uniform(50, 2000))
    return (f"{m:g} g of {f} is dissolved to make {v:g} mL of solution. What is the molarity? "
            f"{_masses([f])}"), m / molar_mass(f) / (v / 1000), "mol/L"


def _gas_pressure(rng):
    n, t, v = _sig(rng.uniform(0.1, 10)), _sig(rng.uniform(200, 600)), _sig(rng.uniform(1, 100))
    return (f"{n:g} mol of an ideal gas is held at {t:g} K in a {v:g} L container. What is its pressure? "
            f"Use R = {R} J/(mol K)."), n * R * t / v, "kPa"


def _gas_volume(rng):
    n, c, p = _sig(rng.uniform(0.1, 10)), rng.randint(-20, 150), _sig(rng.uniform(50, 500))
    return (f"What volume does {n:g} mol of an ideal gas occupy at {c} °C and {p:g} kPa? Use "
            f"R = {R} J/(mol K) and T(K) = T(°C) + 273.15."), n * R * (c + 273.15) / p, "L"


def _distance(rng):
    v0, a, t = _sig(rng.uniform(0, 30)), _sig(rng.uniform(0.5, 10)), _sig(rng.uniform(1, 30))
    return (f"A car moving at {v0:g} m/s accelerates uniformly at {a:g} m/s^2 for {t:g} s. How far "
            f"does it travel in that time?"), v0 * t + 0.5 * a * t * t, "m"


def _free_fall(rng):
    h = _sig(rng.uniform(1, 500))
    return (f"A stone is dropped from rest from a height of {h:g} m. Ignoring air resistance and with "
            f"g = {G} m/s^2, how long does it take to reach the ground?"), math.sqrt(2 * h / G), "s"


def _projectile(rng):
    v, angle = _sig(rng.uniform(5, 60)), rng.randint(10, 80)
    return (f"A ball is launched from level ground at {v:g} m/s at {angle} degrees above the horizontal. "
            f"Ignoring air resistance and with g = {G} m/s^2, how far away does it land?"), \
        v * v * math.sin(math.radians(2 * angle)) / G, "m"


def _kinetic(rng):
    m, v = _sig(rng.uniform(0.1, 2000)), _sig(rng.uniform(1, 50))
    return f"What is the kinetic energy of a {m:g} kg object moving at {v:g} m/s?", 0.5 * m * v * v / 1000, "kJ"


def _ohm(rng):
    volts, ohms = _sig(rng.uniform(1, 240)), _sig(rng.uniform(10, 5000))
    return (f"A {volts:g} V source drives a current through a {ohms:g} ohm resistor. What is the current?"), \
        volts / ohms * 1000, "mA"


CONVERSIONS = [("km/h", "m/s"), ("m/s", "km/h"), ("mph", "km/h"), ("atm", "kPa"), ("mmHg", "kPa"),
               ("bar", "atm"), ("kcal", "kJ"), ("kJ", "cal"), ("mi", "km"), ("ft", "m"), ("lb", "kg"),
               ("gal", "L"), ("h", "s"), ("mL", "m^3"), ("g", "lb")]


def _conversion(rng):
    source, target = rng.choice(CONVERSIONS)
    x = _sig(rng.uniform(0.5, 1000))
    factor = UNITS[source][1] / UNITS[target][1]
    return (f"Convert {x:g} {source} to {target} (1 mi = 1609.344 m, 1 ft = 0.3048 m, 1 lb = 0.45359237 kg, "
            f"1 gal = 3.785411784 L, 1 atm = 101325 Pa, 1 mmHg = 133.322 Pa, 1 cal = 4.184 J, "
            f"1 mph = 0.44704 m/s)."), x * factor, target


TEMPLATES: dict[str, Callable[[random.Random], tuple[str, float, str]]] = {
    "molar_mass": _molar_mass, "moles": _moles, "stoichiometry": _stoichiometry, "molarity": _molarity,
    "gas_pressure": _gas_pressure, "gas_volume": _gas_volume, "distance": _distance,
    "free_fall": _free_fall, "projectile": _projectile, "kinetic_energy": _kinetic, "ohm": _ohm,
    "conversion": _conversion,
}

QUANTITIES = [("the pressure of a gas", "kPa"), ("the mass of a sample", "g"), ("the length of a rod", "cm"),
              ("the current in a wire", "mA"), ("the volume of a solution", "mL"), ("the energy of a battery", "kJ"),
              ("the speed of a car", "km/h"), ("the duration of a reaction", "min")]


def _readout(rng):
    what, unit = rng.choice(QUANTITIES)
    x = _sig(rng.uniform(1, 1000))
    return f"A measurement gives {what} as {x:g} {unit}. What is {what}?", x, unit


# Opt-in templates (not drawn by default): ``readout`` only restates a given value in the asked unit, so a
# model too small to do the arithmetic of TEMPLATES can still pass by following the format feedback.
EXTRA_TEMPLATES: dict[str, Callable[[random.Random], tuple[str, float, str]]] = {"readout": _readout}


@dataclass
class ScienceEnv(Environment):
    """Generated science questions; ``reference`` holds the value, unit and template."""

    rel_tol: float = 0.01  # accepted relative error of the value
    default_n: int = 1000  # problems returned when ``n`` is None
    eval_fraction: float = 0.25  # share of questions (by text hash) in the eval split
    short: bool = False  # ask for the answer line only, no working (short responses for small models)
    templates: tuple[str, ...] | None = None  # draw only from these (TEMPLATES or EXTRA_TEMPLATES; None: TEMPLATES)
    lenient: bool = False  # without an `Answer:` line, grade the last "<number> <unit>" of the response
    reveal: bool = False  # failure feedback ends with the expected answer line, as a failing unit test prints it
    name: str = "science"

    def __post_init__(self) -> None:
        known = {**TEMPLATES, **EXTRA_TEMPLATES}
        unknown = sorted(set(self.templates or ()) - set(known))
        if unknown:
            raise ValueError(f"templates: unknown template {unknown[0]!r}; choose from {sorted(known)}")
        if self.templates is not None and not self.templates:
            raise ValueError("templates: give at least one template, or None for all")

    def problems(self, split: str = "train", n: int | None = None, seed: int = 0) -> list[Problem]:
        """``n`` distinct questions of ``split``: template and values drawn from ``Random(seed)``;
        a question belongs to eval when the hash of its text falls in ``eval_fraction``."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; choose one of {SPLITS}")
        n = self.default_n if n is None else n
        rng, names, seen, problems = random.Random(seed), sorted(self.templates or TEMPLATES), set(), []
        system = SHORT_SYSTEM if self.short else SYSTEM
        for _ in range(100 * n + 1000):
            if len(problems) == n:
                break
            template = rng.choice(names)
            text, value, unit = {**TEMPLATES, **EXTRA_TEMPLATES}[template](rng)
            question = f"{text} Give the answer in {unit}."
            key = zlib.crc32(question.encode())
            if question in seen or (key / 2**32 < self.eval_fraction) != (split == "eval"):
                continue
            seen.add(question)
            problems.append(Problem(id=f"science/{template}/{key:08x}",
                                    prompt=[{"role": "system", "content": system},
                                            {"role": "user", "content": question}],
                                    reference={"value": value, "unit": unit, "template": template}))
        if len(problems) < n:
            raise ValueError(f"ScienceEnv: could only generate {len(problems)} distinct {split} problems, asked n={n}")
        return problems

    def verify(self, problem: Problem, response: str) -> Outcome:
        """Check the ``Answer:`` line's number and unit against the reference; with ``reveal``, a failure's
        feedback ends with ``Expected: `Answer: <value> <unit>`.`` (the value to 4 significant digits)."""
        outcome = self._grade(problem, response)
        if self.reveal and not outcome.passed:
            expected = f"Answer: {problem.reference['value']:.4g} {problem.reference['unit']}"
            return Outcome(outcome.reward, False, f"{outcome.feedback} Expected: `{expected}`.")
        return outcome

    def _grade(self, problem: Problem, response: str) -> Outcome:
        truth, unit = problem.reference["value"], problem.reference["unit"]
        dimension = UNITS[unit][0]
        lines = [line for line in response.splitlines() if re.search(r"answer\s*[:=]", line, re.I)]
        if not lines and self.lenient:
            lines = [f"Answer: {q}" for q in last_quantity(response)]
        if not lines:
            return Outcome(0.0, False, f"Format: no final line `Answer: <number> <unit>` was found; end with "
                                       f"one, e.g. `Answer: 1.23 {unit}`.")
        text = re.split(r"answer\s*[:=]", lines[-1], flags=re.I)[-1].strip().strip("*`$").strip()
        match = re.match(NUMBER, text)
        if not match:
            return Outcome(0.0, False, f"Format: the answer line `{lines[-1].strip()}` does not start with a "
                                       f"number; write e.g. `Answer: 1.23 {unit}`.")
        value = parse_number(match.group(0))
        given = text[match.end():].strip().strip(".").strip()
        if not given:
            return Outcome(0.0, False, f"Unit: the answer {value:g} has no unit; the question asks for {unit}.")
        symbol = normalise_unit(given)
        if symbol is None:
            return Outcome(0.0, False, f"Unit: `{given}` is not a unit I recognise; the question asks for "
                                       f"{unit} ({DIMENSION_WORDS[dimension]}).")
        if UNITS[symbol][0] != dimension:
            return Outcome(0.0, False, f"Unit: {symbol} is {DIMENSION_WORDS[UNITS[symbol][0]]}, but the "
                                       f"question asks for {DIMENSION_WORDS[dimension]} in {unit}.")
        converted = value * UNITS[symbol][1] / UNITS[unit][1]
        magnitude = describe_error(converted, truth, self.rel_tol)
        if symbol != unit:
            status = "the value is right" if not magnitude else f"and the value is wrong too: {magnitude}"
            return Outcome(0.0, False, f"Unit: the question asks for {unit}, the answer is in {symbol} "
                                       f"({status}).")
        if magnitude:
            return Outcome(0.0, False, f"Magnitude: {value:g} {unit} {magnitude}.")
        return Outcome(1.0, True, "")


def last_quantity(text: str) -> list[str]:
    """``["41.4 km/h"]``: the last number of ``text`` followed by a recognised unit, or ``[]``."""
    found = [f"{m.group(1)} {m.group(2)}" for m in re.finditer(f"({NUMBER})\\s*([A-Za-z°][A-Za-z°/^0-9-]*)", text)
             if normalise_unit(m.group(2)) is not None]
    return found[-1:]


def parse_number(text: str) -> float:
    """``"1,234.5"``, ``"3.2e-4"``, ``"6.02 × 10^23"`` -> float."""
    text = text.replace("−", "-").replace(",", "")
    parts = re.split(r"\s*(?:[x×*]|\\times)\s*10\s*(?:\^|\*\*)\s*", text)
    value = float(parts[0])
    if len(parts) > 1:
        value *= 10 ** int(parts[1].strip("{}"))
    return value


def normalise_unit(text: str) -> str | None:
    """The symbol of :data:`UNITS` that ``text`` names (``"kilopascals"`` -> ``"kPa"``), or None."""
    text = re.sub(r"\s+per\s+", "/", text)
    compact = re.sub(r"\s+", "", text.replace("²", "^2").replace("³", "^3").replace("·", "")
                     .replace("⁻¹", "^-1").replace("⁻²", "^-2").replace("°", ""))
    if compact in UNITS:
        return compact
    return ALIASES.get(compact.lower(), compact.lower() if compact.lower() in UNITS else None)


def describe_error(value: float, truth: float, rel_tol: float) -> str:
    """"" when ``value`` is within ``rel_tol`` of ``truth``; else how it is off (sign, power of ten, %)."""
    if abs(value - truth) <= rel_tol * abs(truth):
        return ""
    if value == 0 or truth == 0 or (value < 0) != (truth < 0):
        return "has the wrong sign or is zero"
    exponent = math.log10(abs(value / truth))
    if round(exponent) != 0 and abs(exponent - round(exponent)) < 0.02:
        side = "large" if exponent > 0 else "small"
        return (f"is off by a factor of 10^{round(exponent)} (too {side}): check unit prefixes and "
                f"conversions")
    side = "large" if value > truth else "small"
    return f"is too {side} by {abs(value / truth - 1):.0%}"
