"""The README read as the tests hold it to the code: its passages, its commands and the names it quotes."""

from __future__ import annotations

import re
import shlex

from tests.workspace import ROOT

README = (ROOT / "README.md").read_text()
CODE = re.compile(r"`([^`\n]+)`")


def passage(start: str, end: str) -> str:
    """The README's text from ``start`` up to ``end`` (the first one after it)."""
    begin = README.index(start)
    return README[begin : README.index(end, begin)]


def quoted(text: str) -> list[str]:
    """The inline code spans of ``text``, in order."""
    return CODE.findall(text)


def request_log_fields() -> tuple[set[str], set[str]]:
    """The request log's fields the README names: those of every line, and those added when houses were priced."""
    sentence = passage("Each API or admin request writes one JSON line", "(how many)")
    every, priced = sentence.split("when it priced")
    return set(quoted(every.split("with the fields")[1])), set(quoted(priced))


def shell_command(start: str) -> list[str]:
    """The words of the README's shell command that begins with ``start``, continuation lines joined."""
    begin = README.index(start)
    lines = []
    for line in README[begin:].splitlines():
        lines.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(lines))


def make_targets() -> set[str]:
    """Every `make X` the README names, in prose or in a shell block."""
    return set(re.findall(r"(?:^|`)make ([a-z][a-z-]*)", README, flags=re.MULTILINE))


def housing_commands() -> set[str]:
    """Every `housing X` subcommand the README names, in prose or in a shell block."""
    return set(re.findall(r"(?:^|`)housing ([a-z]+)", README, flags=re.MULTILINE))


def metrics() -> dict[str, set[str] | None]:
    """Every `housing_*` metric the README names, with the labels it gives (None when it gives none)."""
    named: dict[str, set[str] | None] = {}
    for name, labels in re.findall(r"`(housing_[a-z_]+)(?:\{([a-z_,]+)\})?`", README):
        named[name] = set(labels.split(",")) if labels else named.get(name)
    return named
