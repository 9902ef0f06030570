"""One home per knob (issue 22): the table of controls makes the command line's flags, the page's
inputs and the API's parameters, which list the same settings with the same ranges and defaults;
each face names a refused setting in its own word; no library message names a command-line
flag; and the package has no import loop."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gradio as gr
import pytest

from magedit import cli, controls
from magedit.config import TINY_QUICK, EditConfig
from magedit.errors import InputError, InputErrors
from magedit.web import build_demo
from magedit.web.api import API_PARAMETERS

PACKAGE = Path(__file__).resolve().parents[1] / "magedit"


def help_of(command: str) -> dict[str, str]:
    """`magedit COMMAND --help`'s text per flag (argparse's own rendering, unwrapped)."""
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    return {
        option: " ".join((action.help or "").split())
        for action in sub._actions  # noqa: SLF001
        for option in action.option_strings
    }


@pytest.fixture(scope="module")
def page(tiny_pipe, tmp_path_factory):
    return build_demo(lambda: tiny_pipe, tiny=False, output_dir=tmp_path_factory.mktemp("out"))


def test_the_cli_the_page_and_the_api_list_the_same_settings_ranges_and_defaults(page):
    edit_help = help_of("edit")
    inputs = {b.elem_id: b for b in page.blocks.values() if getattr(b, "elem_id", None)}
    api = page.get_api_info()["named_endpoints"]["/edit"]["parameters"]
    api = {p["parameter_name"]: p for p in api}
    for control in controls.PAGE_SETTINGS:
        default = control.default()
        # The page: the control, its range (or choices) and its default value.
        shown = inputs[f"magedit-{control.name.replace('_', '-')}"]
        assert shown.label == control.label
        if control.kind == "choice":
            assert [value for _, value in shown.choices] == control.values
        else:
            assert (shown.minimum, shown.maximum) == (control.low, control.high)
        assert shown.value == default
        # The API: the same name, default and (in its description) nothing else to know.
        assert api[control.name]["parameter_default"] == default, control.name
        # The command line: the flag, with the same range and default in its help.
        said = edit_help[control.flag]
        if control.kind == "choice":
            parser_choices = next(
                a.choices for a in cli.build_parser()._subparsers._group_actions[0]  # noqa: SLF001
                .choices["edit"]._actions if control.flag in a.option_strings  # noqa: SLF001
            )  # fmt: skip
            assert list(parser_choices) == control.values
        else:
            assert control.text() in said, (control.flag, said)
        assert f"default {default}" in said, (control.flag, said)
    # The API's settings are the page's, in the page's order, between the text and the region.
    names = [c.name for c in controls.PAGE_SETTINGS]
    assert API_PARAMETERS[5 : 5 + len(names)] == names


def test_tiny_defaults_are_the_same_on_every_face(tiny_pipe, tmp_path):
    page = build_demo(lambda: tiny_pipe, tiny=True, output_dir=tmp_path)
    inputs = {b.elem_id: b for b in page.blocks.values() if getattr(b, "elem_id", None)}
    api = {p["parameter_name"]: p for p in page.get_api_info()["named_endpoints"]["/edit"][
        "parameters"]}  # fmt: skip
    edit_help = help_of("edit")
    for control in controls.PAGE_SETTINGS:
        if control.field not in TINY_QUICK:
            continue
        quick = TINY_QUICK[control.field]
        assert inputs[f"magedit-{control.name}"].value == quick
        assert api[control.name]["parameter_default"] == quick
        assert f"--tiny: {quick}" in edit_help[control.flag]


def test_every_config_field_a_person_sets_has_one_control():
    fields = {f for f in EditConfig.__dataclass_fields__} - {"null_lr", "null_epsilon"}
    cli_fields = {c.field for c in controls.CLI_SETTINGS} - {"preset"}
    assert cli_fields == fields  # the learning rate and threshold of null-text stay the paper's
    assert len({c.name for c in controls.CONTROLS}) == len(controls.CONTROLS)
    assert len({c.flag for c in controls.CONTROLS if c.flag}) == len(controls.CLI_SETTINGS)


@pytest.mark.parametrize(
    ("face", "said"),
    [
        ("library", "max_iter is 31, out of range; give a whole number from 0 to 30"),
        ("cli", "--iterations is 31, out of range; give a whole number from 0 to 30"),
        ("page", "Iterations per step (MAX_IT) is 31, out of range; give a whole number"),
        ("api", "iterations is 31, out of range; give a whole number from 0 to 30"),
    ],
)
def test_each_face_names_a_refused_setting_in_its_own_word(face, said):
    with pytest.raises(InputErrors) as refused:
        controls.config_from_values({"iterations": 31})
    (error,) = refused.value.errors
    assert error.field == "max_iter"
    assert controls.say(error, face).startswith(said)
    if face == "library":
        assert str(error).startswith(said)


def test_the_config_from_values_is_the_cli_config():
    values = {"preset": "object", "steps": 20, "iterations": 3, "granularity": 4.0}
    args = cli.build_parser().parse_args(
        ["edit", "--image", "p", "--mask", "m", "--source", "a", "--target", "b",
         "--preset", "object", "--steps", "20", "--iterations", "3", "--scale", "4"]
    )  # fmt: skip
    assert cli.build_config(args) == controls.config_from_values(values)
    assert controls.config_from_values(values).tau1 == 16  # the object preset's 40 of 50


def test_no_library_message_names_a_command_line_flag():
    """Page visitors read the library's messages; only the command-line faces (cli.py, app.py)
    name flags, writing them in for the ``{field}`` placeholders (controls.say)."""
    flag = re.compile(r"(^|[\s`'\"]|(?<!var)\()--[a-z][a-z-]+")  # not a CSS var(--name)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("cli.py",) or path.name == "controls.py":
            continue  # the command line itself, and the table of the flags' names
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and id(node) not in docstrings and flag.search(text):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_the_library_words_fill_the_placeholders_of_a_loading_error(tmp_path):
    from magedit import loading

    with pytest.raises(FileNotFoundError) as missing:
        loading.model_source(str(tmp_path / "nowhere") + "/")
    assert "--" not in str(missing.value)
    assert "(--tiny)" in controls.say(missing.value, "cli")
    error = InputError("dtype", "try {dtype} float32")
    assert (str(error), controls.say(error, "cli")) == ("try dtype float32", "try --dtype float32")


def imports_of(path: Path) -> set[str]:
    """The magedit modules ``path`` imports, at module level or in a function, but not under
    ``if TYPE_CHECKING`` (never run); ``from magedit.web import events`` imports the submodule."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
        ".__init__") for p in PACKAGE.rglob("*.py")}  # fmt: skip
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("magedit"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            if len(subs) < len(node.names):
                found.add(node.module)
            found |= subs
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("magedit")}
    return found & modules


def test_the_package_has_no_import_loop():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        graph[name.removesuffix(".__init__")] = imports_of(path) - {"magedit"}
    loops = []

    def visit(module: str, stack: list[str]) -> None:
        for dependency in sorted(graph.get(module, ())):
            if dependency in stack:
                loops.append(" -> ".join([*stack[stack.index(dependency) :], dependency]))
            elif dependency not in done:
                visit(dependency, [*stack, dependency])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [module])
    assert loops == []
    assert "magedit.piebench" not in graph["magedit.bench"] or (
        "magedit.bench" not in graph["magedit.piebench"]
    )


def test_the_api_parameters_are_generated_once(page):
    """The API's 19 parameters and the page's edit inputs come from lists, not spelled out:
    the handlers' signatures are the lists."""
    edit = next(f for f in page.fns.values() if f.api_name == "edit")
    import inspect

    assert list(inspect.signature(edit.fn).parameters) == [*API_PARAMETERS, "request"]
    page_edit = next(
        f for f in page.fns.values() if getattr(f.fn, "__name__", "") == "edit_on_page"
    )
    names = list(inspect.signature(page_edit.fn).parameters)
    assert names[:5] == ["image", "source", "target", "words", "negative_word"]
    assert names[-1] == "request" and isinstance(page, gr.Blocks)


def test_the_readme_table_of_settings_is_the_table():
    """README.md lists the page's settings with their ranges and defaults: the table's."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (.+?) \| `(\w+)` / `(--[\w-]+)` \| (.+?) \| (.+?) \|$", readme, re.M)
    assert [row[1] for row in rows] == [c.name for c in controls.PAGE_SETTINGS]
    for (label, name, flag, accepts, default), control in zip(
        rows, controls.PAGE_SETTINGS, strict=True
    ):
        assert control.label.startswith(label.split(" (")[0]) and flag == control.flag
        if control.kind == "choice":
            assert accepts == ", ".join(str(v) for v in control.values)
        else:
            assert accepts == f"{control.low:g} to {control.high:g}"
        shown = f"{control.default()}"
        if control.field in TINY_QUICK:
            shown += f" ({control.default(tiny=True)})"
        assert default == shown, (name, default, shown)
