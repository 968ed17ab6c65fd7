"""Checks that the README's set-up commands and lesson map agree with the repository."""
from __future__ import annotations

import re
from pathlib import Path

from transfer_kit.core import LESSONS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def setup_commands() -> list[str]:
    section = README.split("## Set up", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_has_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert "transfer-kit quickstart" in commands[0]
    assert "tools/test.sh" in commands[1]


def test_readme_commands_name_real_files():
    main_job, test_command = setup_commands()
    assert "constraints-ci.txt" in main_job
    assert (ROOT / "constraints-ci.txt").is_file()
    assert (ROOT / "tools" / "test.sh").is_file()
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "tools/test.sh" in ci_script, ".ci/run must run the README's test command"


def test_readme_lesson_map_matches_course():
    linked = re.findall(r"\]\((nbs/lessons/[^)]+\.ipynb)\)", README)
    assert linked == [row["notebook"] for row in LESSONS]
    on_disk = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "nbs" / "lessons").glob("[0-9]*.ipynb"))
    assert sorted(linked) == on_disk


def test_readme_cli_commands_exist():
    from transfer_kit.cli import build_parser
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    for command in re.findall(r"^transfer-kit (\w+)", README, re.M):
        assert command in subcommands, f"README shows 'transfer-kit {command}', which the CLI does not have"
