"""The stub file, __all__ and the runtime agree, so docs and types cannot drift silently."""
import ast
import inspect
from pathlib import Path

import bunsock

# The stub beside the bunsock under test: src/ in a checkout, site-packages for an installed wheel
# (which must ship it: py.typed promises types).
STUB = Path(bunsock.__file__).resolve().parent / "__init__.pyi"


def stub_tree():
    return ast.parse(STUB.read_text())


def stub_names():
    names = set()
    for node in stub_tree().body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def test_all_matches_stub():
    missing = set(bunsock.__all__) - stub_names()
    assert not missing, "in __all__ but not in __init__.pyi: %s" % sorted(missing)
    for name in bunsock.__all__:
        assert hasattr(bunsock, name), name


def test_stub_classes_match_runtime_members():
    for node in stub_tree().body:
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(bunsock, node.name)
        stubbed = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        stubbed |= {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
        for name in stubbed:
            assert hasattr(cls, name), "%s.%s is in the stub but not at runtime" % (node.name, name)
        public = {n for n, _ in inspect.getmembers(cls) if not n.startswith("_")}
        assert not public - stubbed, "%s has public members missing from the stub: %s" % (
            node.name, sorted(public - stubbed))


def test_every_public_callable_has_a_docstring():
    """help(bunsock.X) is a user's first doc: no public function, class or method without one."""
    def prose(obj, name):
        # Cython's embedsignature puts "name(args)" first: that alone is not documentation.
        lines = (inspect.getdoc(obj) or "").strip().splitlines()
        if lines and "(" in lines[0] and lines[0].split("(")[0].split(".")[-1] == name:
            lines = lines[1:]
        return "".join(lines).strip()

    missing = []
    for name in bunsock.__all__:
        obj = getattr(bunsock, name)
        if not prose(obj, name):
            missing.append(name)
        if inspect.isclass(obj):
            for mname, member in inspect.getmembers(obj):
                if mname.startswith("_") or not callable(member):
                    continue
                if not prose(member, mname):
                    missing.append("%s.%s" % (name, mname))
    assert not missing, "no docstring: %s" % ", ".join(missing)
