"""Write docs/configuration.md, the configuration reference, from the typed schema.

The schema's dataclasses (wgangp/config/schema.py and any wgangp/config/schema_*.py)
are read with ``ast``, not imported, so the page can be built without torch or Hydra.
For every field the page gives its dotted key, its type, its default and the comment
lines directly above it (or at the end of its line), under its class's docstring; each
Hydra group under configs/ gets a table of its options with each file's first comment
line. ``tests/test_docs.py`` checks that the committed page equals this output.

    python scripts/config_reference.py [--out docs/configuration.md] [--check]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "configuration.md"
ROOT_CLASS = "Config"
# an option's description is its file's first sentence, cut at a comma past this length
MAX_OPTION_TEXT = 240


@dataclass
class FieldDoc:
    """One schema field: its name, type text, default text (or the class it nests)."""

    name: str
    type_text: str
    default_text: str
    comment: str
    nested: str | None = None


@dataclass
class ClassDoc:
    name: str
    doc: str
    bases: list[str]
    fields: list[FieldDoc] = field(default_factory=list)


def schema_files(root: Path = ROOT) -> list[Path]:
    """schema.py first, then schema_*.py in name order."""
    pkg = root / "wgangp" / "config"
    return [pkg / "schema.py", *sorted(pkg.glob("schema_*.py"))]


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "dataclass":
            return True
    return False


def _comment_above(lines: list[str], lineno: int) -> list[str]:
    """The run of ``#`` lines ending right above 1-based line ``lineno``."""
    out: list[str] = []
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        text = lines[i].strip().lstrip("#").strip()
        # a "--- section ---" banner names a block of fields, not the one below it
        if not text.startswith("---"):
            out.append(text)
        i -= 1
    return list(reversed(out))


def _plain(text: str) -> str:
    """reStructuredText roles and literals (``x``, :mod:`x`) as Markdown code."""
    text = re.sub(r":\w+:`([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _inline_comment(line: str) -> str:
    """The ``# ...`` at the end of a code line (outside string literals)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[i + 1 :].strip()
    return ""


def _default(value: ast.expr | None, classes: set[str]) -> tuple[str, str | None]:
    """(default text, nested class name or None) of a field's right-hand side."""
    if value is None:
        return "required", None
    if isinstance(value, ast.Name) and value.id == "MISSING":
        return "required", None
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
        for kw in value.keywords:
            if kw.arg == "default_factory":
                fac = kw.value
                if isinstance(fac, ast.Name) and fac.id in classes:
                    return "", fac.id
                if isinstance(fac, ast.Lambda):
                    return _default(fac.body, classes)
                return ast.unparse(fac) + "()", None
            if kw.arg == "default":
                return _default(kw.value, classes)
        return "required", None
    try:
        return _yaml_text(ast.literal_eval(value)), None
    except ValueError:
        return ast.unparse(value), None


def _yaml_text(value: object) -> str:
    """A literal as it is typed on the command line (``true``, ``null``, ``auto``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value or '""'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    return repr(value)


def _renames(tree: ast.Module) -> dict[tuple[str, str], str]:
    """Fields renamed after their class (``_rename_field(GPConfig, "lambda_", "lambda")``)."""
    out: dict[tuple[str, str], str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        name = getattr(call.func, "id", "")
        args = call.args
        if name.endswith("rename_field") and len(args) == 3 and isinstance(args[0], ast.Name):
            old, new = (a.value for a in args[1:] if isinstance(a, ast.Constant))
            out[(args[0].id, old)] = new
    return out


def parse_schema(paths: list[Path]) -> dict[str, ClassDoc]:
    """Every dataclass of the schema files, in source order, by class name."""
    trees = [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in paths if p.exists()]
    names = {
        n.name
        for _, tree in trees
        for n in tree.body
        if isinstance(n, ast.ClassDef) and _is_dataclass(n)
    }
    classes: dict[str, ClassDoc] = {}
    for path, tree in trees:
        lines = path.read_text(encoding="utf-8").splitlines()
        renames = _renames(tree)
        for node in tree.body:
            if not (isinstance(node, ast.ClassDef) and _is_dataclass(node)):
                continue
            doc = ClassDoc(
                name=node.name,
                doc=_plain(" ".join((ast.get_docstring(node) or "").split())),
                bases=[b.id for b in node.bases if isinstance(b, ast.Name) and b.id in names],
            )
            for stmt in node.body:
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                default, nested = _default(stmt.value, names)
                comment = _comment_above(lines, stmt.lineno)
                inline = _inline_comment(lines[stmt.end_lineno - 1])
                if inline:
                    comment.append(inline)
                doc.fields.append(
                    FieldDoc(
                        name=renames.get((node.name, stmt.target.id), stmt.target.id),
                        type_text=ast.unparse(stmt.annotation),
                        default_text=default,
                        comment=" ".join(comment),
                        nested=nested,
                    )
                )
            classes[node.name] = doc
    return classes


def all_fields(cls: ClassDoc, classes: dict[str, ClassDoc]) -> list[FieldDoc]:
    """A class's fields after its schema base classes' (a redefined name replaces)."""
    out: dict[str, FieldDoc] = {}
    for base in cls.bases:
        for f in all_fields(classes[base], classes):
            out[f.name] = f
    for f in cls.fields:
        out[f.name] = f
    return list(out.values())


def _cell(text: str) -> str:
    """Text for a table cell: pipes and angle brackets escaped, never empty."""
    text = text.replace("|", "&#124;").replace("<", "&lt;").replace(">", "&gt;")
    if text.count("`") % 2:
        # an unpaired backtick is a character (text padding), not a code span
        text = text.replace("`", "&#96;")
    return text or "—"


def _join(*parts: str) -> str:
    """Texts as consecutive sentences (a full stop added where one is missing)."""
    texts = [t.strip()[0].upper() + t.strip()[1:] for t in parts if t and t.strip()]
    return " ".join(t if t.endswith((".", ":", ")")) or t is texts[-1] else t + "." for t in texts)


def _code(text: str) -> str:
    if text in ("", "required"):
        return text or "—"
    return "<code>" + _cell(text) + "</code>"


def _rows(cls: ClassDoc, classes: dict[str, ClassDoc], prefix: str, notes: list[str]) -> list[str]:
    rows: list[str] = []
    for f in all_fields(cls, classes):
        key = prefix + f.name
        if f.nested:
            sub = classes[f.nested]
            if sub.doc or f.comment:
                notes.append(f"`{key}`: {_join(f.comment, sub.doc)}")
            rows.extend(_rows(sub, classes, key + ".", notes))
            continue
        rows.append(
            f"| `{key}` | {_code(f.type_text)} | {_code(f.default_text)} | {_cell(f.comment)} |"
        )
    return rows


def _first_comment(path: Path) -> str:
    """The first sentence of a YAML file's leading comment.

    Hydra's ``@package`` directive is left out, and the sentence ends at a full stop,
    at a blank comment line or before an indented example line (``#   wgangp-train``).
    """
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            break
        body = text[1:]
        if "@package" in body:
            continue
        if not body.strip() or (words and body.startswith("   ")):
            break
        # "(...)" closing a line before a capital ends a sentence without a full stop
        if words and words[-1].endswith(")") and body.strip()[0].isupper():
            break
        words.append(body.strip())
    sentence = " ".join(words).split(":  ")[0]
    match = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.(\s|$)", sentence)
    if match:
        sentence = sentence[: match.start() + 1]
    if len(sentence) > MAX_OPTION_TEXT:
        cut = max(sentence.rfind(sep, 0, MAX_OPTION_TEXT) for sep in (", ", "; ", ": "))
        sentence = sentence[: cut if cut > 0 else MAX_OPTION_TEXT] + " …"
    return sentence.removesuffix(":")


def group_options(configs: Path) -> dict[str, list[tuple[str, str]]]:
    """``{group: [(option, first comment line)]}`` for every folder of YAML files."""
    out: dict[str, list[tuple[str, str]]] = {}
    for yaml in sorted(configs.rglob("*.yaml")):
        group = yaml.parent.relative_to(configs).as_posix()
        if group == ".":
            continue
        out.setdefault(group, []).append((yaml.stem, _first_comment(yaml)))
    return out


def _options_table(group: str, options: list[tuple[str, str]]) -> list[str]:
    lines = [f"| `{group}=` | what it is |", "| --- | --- |"]
    lines += [f"| `{name}` | {_cell(comment)} |" for name, comment in options]
    return lines


def _keys_table(rows: list[str]) -> list[str]:
    return ["| key | type | default | meaning |", "| --- | --- | --- | --- |", *rows]


HEADER = """\
# Configuration reference

<!-- Generated by scripts/config_reference.py from wgangp/config/schema*.py and
configs/; edit those, then run `make docs`. tests/test_docs.py fails when this page
and the generator's output differ. -->

Hydra composes the files under `configs/` on top of a typed schema, the dataclasses
of `wgangp/config/`. Every key below can be set on the command line
(`wgangp-train gp.lambda=1 trainer.steps=500`); a group picks a whole file
(`wgangp-train dataset=cifar10`). A wrong type or an unknown key is refused before
any work starts, with one line that names the key; the semantic checks (ranges,
combinations) are in `wgangp/config/validate.py`.

A default here is the schema's; the group files and recipes change many of them
(`recipe=toy` for the toy sets, the image trainer preset for image sets). Print
what a command line composes to with `wgangp-train --cfg job ...`.
"""


def render(root: Path = ROOT) -> str:
    """The whole page, as text."""
    classes = parse_schema(schema_files(root))
    groups = group_options(root / "configs")
    out = [HEADER]
    config = classes.get(ROOT_CLASS)
    documented: set[str] = set()
    if config is not None:
        documented.add(config.name)
        top: list[str] = []
        for f in all_fields(config, classes):
            if not f.nested:
                top.append(
                    f"| `{f.name}` | {_code(f.type_text)} | {_code(f.default_text)} "
                    f"| {_cell(f.comment)} |"
                )
                continue
            cls = classes[f.nested]
            documented.add(cls.name)
            out.append(f"## `{f.name}`\n")
            intro = _join(f.comment, cls.doc)
            if intro:
                out.append(intro + "\n")
            if f.name in groups:
                out.append("\n".join(_options_table(f.name, groups.pop(f.name))) + "\n")
            notes: list[str] = []
            rows = _rows(cls, classes, f.name + ".", notes)
            out.append("\n".join(_keys_table(rows)) + "\n")
            documented.update(_nested_names(cls, classes))
            if notes:
                out.append("\n".join(f"- {n}" for n in notes) + "\n")
            # kinds of this section (one schema per kind of data set, say): subclasses
            for kind in classes.values():
                if kind.name == cls.name or cls.name not in _ancestors(kind, classes):
                    continue
                documented.add(kind.name)
                out.append(f"### `{f.name}` of the kind `{kind.name}`\n")
                parents = ", ".join(f"`{b}`" for b in kind.bases)
                intro = _join(kind.doc, f"Also the keys of {parents}.")
                out.append(intro + "\n")
                kind_notes: list[str] = []
                own = ClassDoc(kind.name, kind.doc, [], kind.fields)
                rows = _rows(own, classes, f.name + ".", kind_notes)
                out.append("\n".join(_keys_table(rows)) + "\n")
        if top:
            out.append("## Top-level keys\n")
            out.append("\n".join(_keys_table(top)) + "\n")
    rest = [c for c in classes.values() if c.name not in documented]
    for cls in rest:
        out.append(f"## Schema `{cls.name}`\n")
        if cls.doc:
            out.append(cls.doc + "\n")
        notes = []
        rows = _rows(cls, classes, "", notes)
        out.append("\n".join(_keys_table(rows)) + "\n")
        if notes:
            out.append("\n".join(f"- {n}" for n in notes) + "\n")
    if groups:
        out.append("## Other groups\n")
        out.append(
            "Groups that pick settings across the schema's sections: a recipe's or an "
            "experiment's constants, a sweeper's search space, a Hydra launcher.\n"
        )
        for group, options in groups.items():
            out.append(f"### `{group}=`\n")
            out.append("\n".join(_options_table(group, options)) + "\n")
    return "\n".join(out)


def _ancestors(cls: ClassDoc, classes: dict[str, ClassDoc]) -> set[str]:
    """The names of a class's schema base classes, transitively."""
    names: set[str] = set()
    for base in cls.bases:
        names |= {base} | _ancestors(classes[base], classes)
    return names


def _nested_names(cls: ClassDoc, classes: dict[str, ClassDoc]) -> set[str]:
    names: set[str] = set()
    for f in all_fields(cls, classes):
        if f.nested:
            names.add(f.nested)
            names |= _nested_names(classes[f.nested], classes)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if --out differs from the output"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
