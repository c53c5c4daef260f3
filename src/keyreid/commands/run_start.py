"""What `train`, `generate train` and `adapt` print before a run starts: the earlier run set aside
(--no-resume) and the config changes a resume accepted (--allow-config-change)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console


def print_run_start(console: Console, output_dir: str, set_aside: Optional[Path], config_changes: list[str]) -> None:
    if set_aside is not None:
        console.print(f"an earlier run's files in {output_dir} were moved to {set_aside}", markup=False)
    if config_changes:
        console.print("resuming with a changed config: " + "; ".join(config_changes), markup=False)
