"""The package's shape, as docs/architecture.md states it: layers that import only downwards, no cycle.

Every ``import`` of every module counts, also those inside functions. A lower layer never imports a
higher one; modules of one layer may import each other as long as no cycle forms. Imports inside
functions are kept for optional or slow third-party packages only (the reason is on the line).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "t2vlab"

# lowest first; a module belongs to the first layer with a prefix of its name
LAYERS = [
    ("facts and tensor helpers", ["t2vlab.configs", "t2vlab.frames", "t2vlab.noise", "t2vlab.checks",
                                  "t2vlab.os_errors", "t2vlab.atomic", "t2vlab.outputs"]),
    ("building blocks and files", ["t2vlab.attention", "t2vlab.resnet", "t2vlab.checkpoint", "t2vlab.safe_pickle",
                                   "t2vlab.video", "t2vlab.inputs", "t2vlab.display", "t2vlab.lora",
                                   "t2vlab.lora_files", "t2vlab.layerwise_casting", "t2vlab.group_offload"]),
    ("techniques", ["t2vlab.techniques"]),
    ("models and schedulers", ["t2vlab.unet", "t2vlab.vae", "t2vlab.tokenizer", "t2vlab.text_encoder",
                               "t2vlab.schedulers"]),
    ("where weights come from", ["t2vlab.weights", "t2vlab.original", "t2vlab.saving"]),
    ("the method", ["t2vlab.guards", "t2vlab.callbacks", "t2vlab.technique_switches", "t2vlab.memory_switches",
                    "t2vlab.compiled",
                    "t2vlab.pipeline",
                    "t2vlab.video_to_video", "t2vlab.lora_loading"]),
    ("what people run", ["t2vlab.notebook", "t2vlab.course", "t2vlab.widgets", "t2vlab.toy", "t2vlab.batch",
                         "t2vlab.finetune", "t2vlab.motion_director", "t2vlab.launcher", "t2vlab.distill",
                         "t2vlab.__main__"]),
]
LAZY_OK = {"transformers", "huggingface_hub", "matplotlib", "PIL", "imageio", "imageio_ffmpeg", "IPython"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import in the file; relative imports resolved,
    ``from package import submodule`` counted as the submodule."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                for a in child.names:
                    sub = f"{target}.{a.name}"
                    found.append((sub if sub in known else target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def layer_of(name: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{name} is in no layer: add it to LAYERS and to docs/architecture.md")


def graph() -> dict[str, set]:
    known = modules()
    edges = {name: set() for name in known}
    for name, path in known.items():
        for target, _, _ in imports(path, known):
            if target in known and target != name and name != "t2vlab":
                edges[name].add(target)
    return edges


def test_every_module_has_a_layer():
    for name in modules():
        if name != "t2vlab":
            layer_of(name)


def test_no_module_imports_upwards_or_the_package_root():
    problems = []
    for name, targets in graph().items():
        if name == "t2vlab":
            continue
        for target in targets:
            if target == "t2vlab":
                problems.append(f"{name} imports the package root (import the module itself)")
            elif layer_of(target) > layer_of(name):
                problems.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} "
                                f"({LAYERS[layer_of(target)][0]})")
    assert not problems, "\n".join(problems)


def find_cycle(edges):
    state, stack = {}, []

    def dfs(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle({k: v for k, v in graph().items() if k != "t2vlab"})
    assert cycle is None, " -> ".join(cycle)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    """The two checks above, on a made-up graph: they must see what they are for."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert layer_of("t2vlab.unet.temporal") < layer_of("t2vlab.pipeline") < layer_of("t2vlab.widgets.studio")


def test_imports_inside_functions_are_only_optional_heavy_packages():
    known = modules()
    lazy = [(name, target, line) for name, path in known.items()
            for target, line, in_function in imports(path, known) if in_function]
    wrong = [f"{name}:{line} imports {target} inside a function" for name, target, line in lazy
             if target.split(".")[0] not in LAZY_OK]
    assert not wrong, "\n".join(wrong)
    for name, target, line in lazy:  # each says why, on the line or the one before
        lines = known[name].read_text(encoding="utf-8").splitlines()
        said = "#" in lines[line - 1] or lines[line - 2].strip().startswith("#") or \
            any("import" in lines[k] and "#" in lines[k] for k in range(max(line - 3, 0), line - 1))
        assert said, f"{name}:{line}: say why {target} is imported inside the function"


def documented_modules() -> dict[str, str]:
    """{module file or folder named in docs/architecture.md's layer table: its layer's title}."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1] in {title for title, _ in LAYERS}:
            for name in re.findall(r"`([\w/]+(?:\.py|/))`", cells[2]):
                found[name] = cells[1]
    return found


def test_the_architecture_page_names_every_module_in_its_layer():
    """docs/architecture.md's table is the tree: every top-level module and package is in it, in the layer this
    test holds it to, and everything it names exists."""
    documented = documented_modules()
    tree = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
            if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert tree - set(documented) == set(), "in the tree but not in docs/architecture.md's table"
    assert set(documented) - tree == set(), "in docs/architecture.md's table but not in the tree"
    for name, title in documented.items():
        module = "t2vlab." + name.removesuffix(".py").rstrip("/")
        assert LAYERS[layer_of(module)][0] == title, f"{name}: the page says {title!r}, the test says otherwise"


def test_the_page_is_read_as_a_table_of_layers():
    documented = documented_modules()
    assert "pipeline.py" in documented and "techniques/" in documented and "unet/" in documented
