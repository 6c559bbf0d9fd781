"""`modeleval --help` reads as written: the command list keeps one command a line in 80 columns."""

from __future__ import annotations

import re

from click.testing import CliRunner

from modeleval.cli import main


def test_help_lists_every_command_one_a_line_in_80_columns():
    shown = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    listed = [line for line in lines if line.startswith("  modeleval ")]
    # Each line names its command and says what it does, after a gap (click rewrapping the
    # docstring joins the list into one paragraph, and the gap or the next command is lost).
    assert all(re.fullmatch(r"  modeleval [\w|\- A-Z]+?  +\S.*", line) for line in listed), listed
    named = {line.split()[1] for line in listed}
    assert named == set(main.commands), (named, sorted(main.commands))
    assert max(map(len, lines)) <= 80, max(lines, key=len)
