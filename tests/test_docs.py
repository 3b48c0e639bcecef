"""The README documents the per-token table: every schema column appears in its tables; the Python blocks of
README.md and docs/*.md run as written (a block marked ``<!-- not run: WHY -->`` on the line above is skipped)."""

from pathlib import Path

import pytest

from creditlens import schema

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = README.parent / "docs"
NOT_RUN = "<!-- not run:"


def python_blocks(path: Path) -> list[tuple[str, str | None]]:
    """``(code, reason)`` of every Python block of a Markdown file; ``reason`` is the text of a ``<!-- not run:
    WHY -->`` line right above the block, else None."""
    parts = path.read_text().split("```python\n")
    blocks = []
    for before, after in zip(parts[:-1], parts[1:], strict=True):
        above = before.rstrip("\n").rsplit("\n", 1)[-1].strip()
        reason = above[len(NOT_RUN):].removesuffix("-->").strip() if above.startswith(NOT_RUN) else None
        blocks.append((after.split("```", 1)[0], reason))
    return blocks


DOC_FILES = sorted(p.name for p in DOCS.glob("*.md") if python_blocks(p))


@pytest.mark.parametrize("name", DOC_FILES)
def test_docs_python_blocks_run_as_written(name, monkeypatch):
    """Each runnable block, in order, in one namespace per file, from the repository root."""
    monkeypatch.chdir(README.parent)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {}
    for i, (code, reason) in enumerate(python_blocks(DOCS / name)):
        if reason is None:
            exec(compile(code, f"docs/{name}, python block {i + 1}", "exec"), namespace)
        else:
            assert reason, f"docs/{name}, python block {i + 1}: a not-run marker must say why"


def test_most_doc_blocks_run():
    blocks = [b for name in DOC_FILES for b in python_blocks(DOCS / name)]
    assert len(DOC_FILES) >= 5 and sum(reason is None for _, reason in blocks) >= 4


def test_readme_documents_every_column():
    text = README.read_text()
    for name in [*schema.TOKEN_COLUMNS, *schema.OPTIONAL_COLUMNS]:
        assert f"`{name}`" in text, f"README.md does not document column {name!r}"


def test_readme_quickstart_is_make_demo_then_make_test():
    text = README.read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = [line.strip() for line in quickstart.splitlines() if line.startswith("    ")]
    assert commands == ["make demo", "make test"]


def test_readme_python_example_runs():
    text = README.read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def _subparsers():
    from creditlens import cli

    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return parser, action.choices


def test_every_command_is_in_the_readme_table_and_docs_cli():
    _, commands = _subparsers()
    table = README.read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    refusals = (README.parent / "docs" / "cli.md").read_text()
    for name in commands:
        assert f"| `creditlens {name}" in table, f"README's command table lacks `creditlens {name}`"
        assert f"creditlens {name}" in refusals.split("\n## ", 1)[1], f"docs/cli.md has no section for {name}"


def test_help_has_no_rst_markup_and_every_option_says_what_it_is():
    parser, commands = _subparsers()
    assert "``" not in parser.format_help() and ":func:" not in parser.format_help()
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest == "help" or action.__class__.__name__ == "_SubParsersAction":
                continue
            assert action.help, f"creditlens {name} {action.option_strings or action.dest}: no help text"


def test_readme_signposts_the_hops_to_the_reward():
    """The three hops of the README's layout section exist in the code as written there."""
    layout = README.read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    root = README.parent
    for path in ("creditlens/cli.py", "creditlens/commands/"):
        assert path in layout
    hops = [("creditlens/cli.py", "train"), ("creditlens/commands/train.py", "from creditlens.training.run import train"),
            ("creditlens/training/run.py", "def build_trainer("), ("creditlens/training/run.py", "SDPOEnvTrainer"),
            ("creditlens/training/trainers.py", "class SDPOEnvTrainer(CreditTrainer)"),
            ("creditlens/training/credit_trainer.py", "class CreditTrainer"),
            ("creditlens/training/credit_trainer.py", "credit.credit_rewards("), ("creditlens/credit.py", "def credit_rewards(")]
    for path, text in hops:
        assert path in layout and text in (root / path).read_text(), (path, text)
