"""The code a stage runs, as one hash: what makes an edit to ``nondet/`` rerun exactly the jobs
whose results it can change (docs/snakemake.md, "Edits to the code").

Snakemake tracks a rule's ``script:`` file, not the modules it imports (design.md 12). Each rule
therefore carries ``code``, a param computed here from its script: the script's names are
followed into the package, definition by definition (a function, a class, a module's constants),
across every import within ``nondet`` including the lazy ones inside functions, and each
definition reached is hashed as its normalised source: the AST without docstrings, comments,
formatting or line numbers. So a metrics edit changes the metrics stage's hash and not the
training stage's, and a docstring, comment or formatting edit changes no hash.

The source is parsed, never imported (no torch at planning), and each file is parsed once per
process (one Snakemake invocation). What the hash cannot see: code reached by a name built at run
time (``importlib.import_module(f"nondet.{x}")``, ``getattr(module, name)``): the package does
neither on a stage's path, and CODE_VERSION (nondet.io.h5io) remains for a change to force.
With ``$NONDET_CODEHASH_CACHE`` set (the tests do), a script's hash is also kept on disk, named
by the bytes of every file it could depend on (:func:`_cache_file`).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from pathlib import Path

PACKAGE = "nondet"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=None)
def module_path(module: str, root: Path) -> Path | None:
    """The file of a ``nondet`` module under ``root`` (None: not one of the package's)."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class _Module:
    """One parsed source file: its top-level definitions, its other top-level statements (the
    'glue': constants, registries), and the names it binds by importing."""

    def __init__(self, name: str, path: Path, root: Path):
        self.name, self.root = name, root
        self.is_package = path.name == "__init__.py"
        tree = _strip_docstrings(ast.parse(path.read_text(), str(path)))
        self.defs: dict[str, ast.AST] = {}
        self.glue: list[ast.AST] = []
        self.imports: dict[str, tuple[str, str | None]] = {}  # local name -> (module, attr or None)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.defs[node.name] = node
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imports.update(self.bindings(node))
            elif not (isinstance(node, ast.If) and _is_type_checking(node.test)):
                self.glue.append(node)

    def bindings(self, node) -> dict[str, tuple[str, str | None]]:
        """Names an import statement binds to (module, attr) within the package."""
        out = {}
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PACKAGE:
                    # import nondet.x.y binds nondet; import nondet.x.y as z binds z to nondet.x.y
                    out[a.asname or PACKAGE] = (a.name if a.asname else PACKAGE, None)
            return out
        base = node.module or ""
        if node.level:
            parts = self.name.split(".")
            keep = len(parts) - node.level + (1 if self.is_package else 0)
            base = ".".join(parts[:keep] + ([base] if base else []))
        if base.split(".")[0] != PACKAGE:
            return out
        for a in node.names:
            if a.name == "*":
                continue
            sub = f"{base}.{a.name}"
            out[a.asname or a.name] = (sub, None) if module_path(sub, self.root) else (base, a.name)
        return out


def _is_type_checking(test) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@functools.lru_cache(maxsize=None)
def _module(name: str, root: Path) -> _Module | None:
    path = module_path(name, root)
    return None if path is None else _Module(name, path, root)


def _references(node: ast.AST, mod: _Module) -> tuple[set[str], dict[str, tuple[str, str | None]]]:
    """Names ``node`` reads, and the package names its own (lazy) imports bind."""
    names, local = set(), {}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            local.update(mod.bindings(sub))
        elif isinstance(sub, ast.Attribute):
            chain, base = [sub.attr], sub.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name):
                names.add(".".join([base.id, *reversed(chain)]))
    return names, local


#: (root, "module:name") -> (normalised source, names it reads, names its own imports bind)
_UNITS: dict = {}


class _Closure:
    """Every definition a set of roots reaches, each as (qualified name, normalised source)."""

    def __init__(self, root: Path):
        self.root = root
        self.units: dict[str, str] = {}

    def add_node(self, key: str, node: ast.AST, mod: _Module) -> None:
        if key in self.units:
            return
        if (self.root, key) not in _UNITS:  # each definition is dumped once per process
            _UNITS[(self.root, key)] = (ast.dump(node, include_attributes=False), *_references(node, mod))
        self.units[key], names, local = _UNITS[(self.root, key)]
        for dotted in sorted(names):
            head, *rest = dotted.split(".")
            if head in local:
                self.add_binding(local[head], rest)
            elif head in mod.imports:
                self.add_binding(mod.imports[head], rest)
            elif head in mod.defs:
                self.add_name(mod.name, head)

    def add_binding(self, target: tuple[str, str | None], rest: list[str]) -> None:
        module, attr = target
        if attr is not None:
            self.add_name(module, attr)
            return
        # a module object: follow its attribute chain (nondet.io.h5io.x, h5io.x) to a definition
        while rest and module_path(f"{module}.{rest[0]}", self.root):
            module, rest = f"{module}.{rest[0]}", rest[1:]
        if rest:
            self.add_name(module, rest[0])
        else:
            self.add_module(module)  # the module itself is passed around: all of it

    def add_name(self, module: str, name: str) -> None:
        mod = _module(module, self.root)
        if mod is None:
            return
        self.add_glue(mod)
        if name in mod.defs:
            self.add_node(f"{module}:{name}", mod.defs[name], mod)
        elif name in mod.imports:  # re-exported
            self.add_binding(mod.imports[name], [])
        elif module_path(f"{module}.{name}", self.root):
            self.add_module(f"{module}.{name}")

    def add_glue(self, mod: _Module) -> None:
        key = f"{mod.name}:<module>"
        if key not in self.units:
            self.add_node(key, ast.Module(body=mod.glue, type_ignores=[]), mod)

    def add_module(self, module: str) -> None:
        mod = _module(module, self.root)
        if mod is None:
            return
        self.add_glue(mod)
        for name in mod.defs:
            self.add_name(module, name)

    def digest(self) -> str:
        h = hashlib.sha256()
        for key in sorted(self.units):
            h.update(f"{key}\0{self.units[key]}\0".encode())
        return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _script_closure(script: str) -> _Closure:
    path = Path(script)
    root = path.parent.parent  # workflow_scripts/.. holds nondet/ (the scripts put it on sys.path)
    mod = _Module("__script__", path, root)
    closure = _Closure(root)
    # the script's own text is tracked by Snakemake; here, what it reaches in the package
    for node in [*mod.defs.values(), *mod.glue]:
        names, local = _references(node, mod)
        for dotted in sorted(names):
            head, *rest = dotted.split(".")
            target = local.get(head) or mod.imports.get(head)
            if target:
                closure.add_binding(target, rest)
    return closure


def script_hash(script) -> str:
    """The hash of the package code a workflow script reaches (16 hex digits, a rule param)."""
    path = Path(script).resolve()
    cached = _cache_file(path)
    if cached is not None and cached.is_file():
        return cached.read_text()
    digest = _script_closure(str(path)).digest()[:16]
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{cached.name}.tmp-{os.getpid()}")
        tmp.write_text(digest)
        os.replace(tmp, cached)  # atomic: parallel Snakemake invocations share the folder
    return digest


#: a folder for :func:`script_hash`'s results across processes (unset: none is kept)
CACHE_ENV = "NONDET_CODEHASH_CACHE"


def _cache_file(script: Path) -> Path | None:
    """Where :func:`script_hash` of ``script`` is kept across processes when ``$NONDET_CODEHASH_CACHE``
    names a folder (the tests set it: each Snakemake invocation otherwise re-parses the package,
    about 0.7 s of CPU). The file is named by the bytes of the script and of every ``.py`` file of
    the package beside it, this module included, so any edit (even a cosmetic one) misses the
    cache and the hash is computed afresh: a cached hash is always the one computed."""
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        return None
    h = hashlib.sha256(script.read_bytes())
    h.update(_package_bytes(script.parent.parent))
    return Path(folder) / f"{h.hexdigest()}.hash"


@functools.lru_cache(maxsize=None)
def _package_bytes(root: Path) -> bytes:
    """The digest of every ``.py`` file of the package under ``root``: its path and bytes."""
    h = hashlib.sha256()
    for p in sorted((root / PACKAGE).rglob("*.py")):
        h.update(f"\0{p.relative_to(root)}\0".encode() + p.read_bytes())
    return h.digest()


def script_units(script) -> list[str]:
    """The definitions behind :func:`script_hash` ("module:name"), for inspection and tests."""
    return sorted(_script_closure(str(Path(script).resolve())).units)


# --- code_changes: warn (keep trained files made by other code, and say so) ---------------------

#: output -> (the code hash it was made with, the current one), collected while planning
STALE: dict[str, tuple[str, str]] = {}


def recorded(path) -> tuple[str | None, str | None]:
    """The code hash an HDF5 output was made with and the ``code`` param its job had (None, None:
    no such file, or made before code hashes)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            made, param = f.attrs.get("code_hash"), f.attrs.get("code_param")
    except OSError:
        return None, None
    made = None if made is None else str(made)
    return made, (made if param is None else str(param))


def kept(digest: str, pattern: str):
    """A ``code`` param of a training rule under ``code_changes: warn``: the output
    (``pattern`` filled with the job's wildcards), if it exists, keeps the param its job had, so
    Snakemake plans nothing for it, and is listed in the warning (:func:`warning`) when it was
    made by other code than ``digest``; a missing output gets ``digest``. (After
    ``--forcerun`` under warn, an output records the current hash and its job's older param.)"""

    def param(wildcards):
        path = pattern.format(**wildcards)
        made, given = recorded(path)
        if made is None:
            return digest
        if made != digest:
            STALE[path] = (made, digest)
        return given

    return param


def warning() -> str | None:
    """The warning for the outputs :func:`kept` kept though other code made them."""
    if not STALE:
        return None
    files = sorted(STALE)
    shown = "\n".join(f"  {f} (made with code {STALE[f][0]}, now {STALE[f][1]})" for f in files[:20])
    more = f"\n  ... and {len(files) - 20} more" if len(files) > 20 else ""
    return (
        f"code_changes: warn: {len(files)} trained output(s) were made by other code than the "
        f"package's now and are kept (what is computed from them follows the current code):\n"
        f"{shown}{more}\n"
        f"Retrain them with: snakemake --forcerun {' '.join(files)}\n"
        "or set code_changes: rerun (the default) to rerun every step the code change can affect."
    )


def warn_at_exit(log) -> None:
    """Under ``code_changes: warn``: :func:`warning`, if any, through ``log`` when the process
    (Snakemake's planning, or its run) ends."""
    import atexit

    def _warn():
        text = warning()
        if text:
            log(text)

    atexit.register(_warn)


def clear() -> None:
    """Forget every parsed file (after editing one in the same process, e.g. in tests)."""
    module_path.cache_clear()
    _module.cache_clear()
    _UNITS.clear()
    _script_closure.cache_clear()
    _package_bytes.cache_clear()
