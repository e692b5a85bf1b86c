"""The README's walkthrough, run as written against a live gateway and case service."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    block = re.search(r"<!-- walkthrough:start -->\s*```sh\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S)
    assert block is not None, "the README lost its walkthrough block"
    return block.group(1)


def test_the_readme_opens_with_the_two_commands():
    first_block = README.read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "make run",
        "make test",
    ]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl")
async def test_the_walkthrough_works_as_written(stack, tmp_path):
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "dev.env").write_text(
        f"CITYGRID_GATEWAY_URL={stack.gateway_url}\nCITYGRID_API_KEY={stack.api_keys['admin']}\n"
    )
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-e",
        "-o",
        "pipefail",
        "-c",
        walkthrough(),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    output = stdout.decode()
    assert process.returncode == 0, stderr.decode() + output
    assert re.search(r"reported [0-9a-f-]{36}", output)
    assert re.search(
        r"440106-\d{8}-\d{6} closed \['report', 'register', 'dispatch', 'accept', 'handle', 'close'\]", output
    )
    assert "1 closed case(s) in Tianhe" in output
    assert '"code":"case.invalid_transition"' in output
