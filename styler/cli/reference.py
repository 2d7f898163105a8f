"""The CLI reference (docs/CLI.md), rendered from the Typer app itself so
that it cannot drift from the code: a test compares the file with
:func:`render`. Regenerate it with ``python -m styler.cli.reference > docs/CLI.md``."""

from __future__ import annotations

from typer.testing import CliRunner

from styler.cli import app

WIDTH = "100"


def command_names() -> list[str]:
    return sorted(c.name for c in app.registered_commands if c.name)


def help_text(*args: str) -> str:
    result = CliRunner().invoke(
        app, [*args, "--help"], prog_name="styler", env={"COLUMNS": WIDTH, "NO_COLOR": "1"}
    )
    if result.exit_code != 0:
        raise RuntimeError(f"styler {' '.join(args)} --help failed: {result.output}")
    return result.output.rstrip()


def render() -> str:
    parts = [
        "# styler command reference",
        "",
        "Generated from the command itself (`python -m styler.cli.reference > docs/CLI.md`);",
        "`tests/test_cli.py` fails when this file and the code disagree.",
        "",
        "## styler",
        "",
        "```",
        help_text(),
        "```",
        "",
    ]
    for name in command_names():
        parts += [f"## styler {name}", "", "```", help_text(name), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
