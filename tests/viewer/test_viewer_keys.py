"""Session-state keys are named in one module (medseg/viewer/ui/keys.py), never as raw strings."""

from __future__ import annotations

import ast
from pathlib import Path

UI = Path(__file__).resolve().parents[2] / "medseg" / "viewer" / "ui"
STATE_METHODS = {"get", "pop", "setdefault"}


def _is_text(node: ast.AST | None) -> bool:
    """A string literal or an f-string: a key spelled out in place."""
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def _is_state(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "session_state"


def raw_keys(source: str, name: str = "<text>") -> list[str]:
    """``name:line`` of each raw string used as a session-state key: a widget's ``key=``,
    ``session_state[...]``, ``session_state.get/pop/setdefault(...)`` or ``... in session_state``."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        hit = False
        if isinstance(node, ast.Call):
            hit = any(k.arg == "key" and _is_text(k.value) for k in node.keywords)
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in STATE_METHODS:
                hit |= _is_state(func.value) and bool(node.args) and _is_text(node.args[0])
        elif isinstance(node, ast.Subscript):
            hit = _is_state(node.value) and _is_text(node.slice)
        elif isinstance(node, ast.Compare):
            hit = _is_text(node.left) and any(_is_state(c) for c in node.comparators)
        if hit:
            found.append(f"{name}:{node.lineno}")
    return found


def test_no_raw_session_state_key_outside_keys_module() -> None:
    files = [p for p in sorted(UI.rglob("*.py")) if p.name != "keys.py"]
    assert len(files) >= 4  # app, panels, review_panel, access at least
    found = [hit for p in files for hit in raw_keys(p.read_text(encoding="utf-8"), p.name)]
    assert found == [], "use a constant of medseg.viewer.ui.keys instead:\n" + "\n".join(found)


def test_no_key_value_spelled_out_outside_keys_module() -> None:
    """Also a key passed on positionally (``_case_from_refs(refs, "Case", "root_case")``):
    no string equal to a distinctive key value (one with ``_`` or ``.``) outside keys.py."""
    from medseg.viewer.ui import keys

    values = {
        v
        for n, v in vars(keys).items()
        if n.isupper() and isinstance(v, str) and ("_" in v or "." in v)
    }
    found = []
    for path in sorted(UI.rglob("*.py")):
        if path.name == "keys.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in values:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert found == [], "use the constant of medseg.viewer.ui.keys:\n" + "\n".join(found)


def test_checker_finds_each_kind_of_raw_key() -> None:
    source = (
        "st.slider('x', key='slice_axial')\n"
        "st.session_state[f'slice_{view}'] = 1\n"
        "st.session_state.get('view')\n"
        "'tool' in st.session_state\n"
        "st.session_state.pop('rv_pick', None)\n"
        "st.slider('x', key=keys.slice_of(view))\n"
        "st.session_state[keys.VIEW]\n"
        "settings.get('view')\n"
    )
    assert raw_keys(source) == [f"<text>:{n}" for n in (1, 2, 3, 4, 5)]


def test_focus_key_is_shared_with_the_canvas() -> None:
    from medseg.viewer.ui import keys

    assert keys.FOCUS == "viewer.focus"
    values = [v for n, v in vars(keys).items() if n.isupper() and isinstance(v, str)]
    assert len(values) == len(set(values)), "two constants share one key"
