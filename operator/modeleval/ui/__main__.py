"""`python -m modeleval.ui`: `modeleval ui` without the CLI's engine imports (the chart's
dashboard runs it so from the operator's image)."""

from .command import ui

ui(prog_name="python -m modeleval.ui")
