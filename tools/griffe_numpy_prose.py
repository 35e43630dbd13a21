"""A griffe extension for the docs build (mkdocs.yml), which adapts the package's numpy-style
docstrings to what griffe's numpy parser expects. It changes only what the docs show, never the
source:

- prose paragraphs that follow a ``Parameters`` section without a section header of their own
  are given a ``Notes`` header, so that griffe does not read their words as parameters;
- a parameter written on one line as ``name : what it is`` (the package's short form; the
  types are in the signature) is shown as the parameter's description, not as its type; a
  short type followed by an indented description (``name : int`` + description) is kept;
- Sphinx roles (``:class:`X```) are shown as code.
"""

from __future__ import annotations

import re

import griffe

# a parameter line: "name : ...", "a, b : ...", "*args : ..." (no indentation)
_ITEM = re.compile(r"^\*{0,2}[A-Za-z_]\w*(, \*{0,2}[A-Za-z_]\w*)* ?:( |$)")
_HEADER = re.compile(r"^-{3,}\s*$")


def add_notes_header(text: str) -> str:
    """``text`` with a ``Notes`` header before the first prose paragraph inside a Parameters
    section (a line after a blank line that is neither indented nor ``name : ...``)."""
    lines = text.split("\n")
    out: list[str] = []
    in_parameters = False
    for i, line in enumerate(lines):
        after_blank = i > 0 and not lines[i - 1].strip()
        next_is_header = i + 1 < len(lines) and _HEADER.match(lines[i + 1])
        if next_is_header:
            in_parameters = line.strip() in ("Parameters", "Other Parameters")
        elif (
            in_parameters
            and after_blank
            and line.strip()
            and not line.startswith(" ")
            and not _ITEM.match(line)
        ):
            out += ["Notes", "-----"]
            in_parameters = False
        out.append(line)
    return "\n".join(out)


# a short "name : type" line is a type when an indented description follows it
_MAX_TYPE = 40
_ITEM_SECTIONS = ("Parameters", "Other Parameters", "Attributes")


def describe_items(text: str) -> str:
    """``text`` with every ``name : description`` item of a Parameters-like section written as
    ``name`` + indented description (see the module docstring)."""
    lines = text.split("\n")
    out: list[str] = []
    section = None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and _HEADER.match(lines[i + 1]):
            section = line.strip()
        match = _ITEM.match(line) if section in _ITEM_SECTIONS else None
        if match is None:
            out.append(line)
            continue
        name, _, rest = line.partition(" :")
        rest = rest.strip()
        continued = i + 1 < len(lines) and lines[i + 1].startswith("    ")
        if not rest or (continued and len(rest) <= _MAX_TYPE):
            out.append(line)  # a real type (or none)
        else:
            out += [name.rstrip(), "    " + rest]
    return "\n".join(out)


# Sphinx roles (:class:`~a.b.C`, :meth:`f`, :func:`g`, :mod:`m`, :data:`D`) -> Markdown code
_ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc):`(~?)([^`]+)`")


def strip_roles(text: str) -> str:
    """``text`` with Sphinx roles written as Markdown code (``~a.b.C`` shown as ``C``)."""

    def code(m: re.Match) -> str:
        name = m.group(2).lstrip(".")
        return f"`{name.rsplit('.', 1)[-1] if m.group(1) else name}`"

    return _ROLE.sub(code, text)


class NumpyProseAfterParameters(griffe.Extension):
    """Applies :func:`add_notes_header` and :func:`strip_roles` to every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is None:
            return
        text = strip_roles(obj.docstring.value)
        if "Parameters\n" in text:
            text = add_notes_header(text)
        if any(f"{name}\n" in text for name in _ITEM_SECTIONS):
            text = describe_items(text)
        obj.docstring.value = text
