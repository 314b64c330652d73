"""Test pictures are pictures the CNN's ranking head never saw.

The head learns from the pictures ``training/data.py`` lists, and from nothing else:
``SKIMAGE_TRAIN`` (scikit-image pictures, by name) and the photos and logos of
``../shared/datasets`` that ``list_items`` does not hold out. A test that searches for one of
them measures memory, not matching, so this file reads every test module (its syntax tree,
nothing is run) and fails on any use of such a picture as a fixture:

- ``skimage.data.<name>()`` (however scikit-image's ``data`` module was imported) and
  ``getattr(skimage.data, "<name>")``;
- a call of a loader with the name as a literal, or as a loader's default: a loader is any test
  function that passes one of its parameters to ``getattr(skimage.data, ...)``, or passes it on
  to another loader (``tests.images.photo``, ``photo_png``, ``resized_jpeg``, ``_skimage``...);
- in a module that loads scikit-image pictures, a list, tuple or set of two or more names of
  scikit-image pictures and nothing else (``PHOTOS``, ``UNRELATED``, a parametrize list), and a
  file name whose stem names one (``"unrelated/moon.jpg"``; URLs aside);
- in a module that mentions the datasets folder, a string naming a trained-on dataset file.

Names count with the files they load (``stereo_motorcycle`` loads ``motorcycle_left``).
"""
from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

from training.data import DEFAULT_DATASETS, SKIMAGE_TRAIN, list_items

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# Folders whose tests may name training pictures, and why. Only tests of the training code itself.
WHITELIST = {
    "tests/training/": "tests training/data.py itself: it asserts that the list names what it trains on",
}

# Uses in folders another branch owned when this guard was written (tests/spark, tests/bulk): listed
# so that the guard is on for every other file now; each entry must still be in use (the test below
# fails once it is gone), so the list only shrinks. They use `moon` as a file that is never matched.
PENDING: set[tuple[str, str]] = set()  # uses still to replace (none left)

IMAGE_SUFFIX = re.compile(r"\.(png|jpe?g|gif|tiff?|webp|bmp)$", re.I)


@lru_cache(maxsize=None)
def skimage_names() -> frozenset[str]:
    import skimage.data

    return frozenset(skimage.data.__all__) | frozenset(n for name in skimage.data.__all__ for n in _files(name))


def _files(name: str) -> list[str]:
    """The stems of the files a ``skimage.data`` function loads (``colorwheel`` loads ``color.png``)."""
    import skimage.data

    try:
        return re.findall(r"data/(\w+)\.\w+", inspect.getsource(getattr(skimage.data, name)))
    except (OSError, TypeError):
        return []


@lru_cache(maxsize=None)
def trained_skimage() -> frozenset[str]:
    return frozenset(SKIMAGE_TRAIN) | frozenset(f for name in SKIMAGE_TRAIN for f in _files(name))


@lru_cache(maxsize=None)
def trained_dataset_files() -> frozenset[str]:
    """``photos/<relative path>`` and ``logos/<name>`` of every trained-on dataset file (none when the
    folder is not beside the checkout)."""
    if not (DEFAULT_DATASETS / "photos").is_dir():
        return frozenset()
    split = list_items(DEFAULT_DATASETS)
    return frozenset(f"{it.kind}s/{it.name.split(':', 1)[1]}" for it in split.train if it.path is not None)


@dataclass(frozen=True)
class Use:
    path: str
    line: int
    name: str
    how: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name!r} ({self.how})"


def _modules(paths: Iterable[Path]) -> dict[str, ast.Module]:
    return {p.relative_to(ROOT).as_posix(): ast.parse(p.read_text(), str(p)) for p in paths}


def _data_aliases(tree: ast.Module) -> set[str]:
    """Dotted names under which the module reaches ``skimage.data``."""
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in ("skimage", "skimage.data"):
                    aliases.add("skimage.data" if a.asname is None else
                                (a.asname if a.name == "skimage.data" else f"{a.asname}.data"))
        elif isinstance(node, ast.ImportFrom) and node.module == "skimage":
            aliases |= {a.asname or a.name for a in node.names if a.name == "data"}
    return aliases


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    return [a.arg for a in fn.args.posonlyargs + fn.args.args]


def _functions(modules: dict[str, ast.Module]) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    return [(path, node) for path, tree in modules.items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _call_arg(call: ast.Call, loader: tuple[int, str]) -> ast.AST | None:
    index, param = loader
    if index < len(call.args):
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == param), None)


def loaders(modules: dict[str, ast.Module]) -> dict[str, tuple[int, str]]:
    """Function name -> (position, name) of the parameter that names a scikit-image picture."""
    found: dict[str, tuple[int, str]] = {}
    functions = _functions(modules)
    aliases = {path: _data_aliases(tree) for path, tree in modules.items()}
    changed = True
    while changed:
        changed = False
        for path, fn in functions:
            if fn.name in found:
                continue
            params = _params(fn)
            for node in ast.walk(fn):
                if not isinstance(node, ast.Call):
                    continue
                arg: ast.AST | None = None
                if (isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2
                        and _dotted(node.args[0]) in aliases[path]):
                    arg = node.args[1]
                elif (callee := _dotted(node.func)) and callee.rsplit(".", 1)[-1] in found:
                    arg = _call_arg(node, found[callee.rsplit(".", 1)[-1]])
                if isinstance(arg, ast.Name) and arg.id in params:
                    found[fn.name] = (params.index(arg.id), arg.id)
                    changed = True
                    break
    return found


def scan(modules: dict[str, ast.Module]) -> list[Use]:
    """Every use of a scikit-image picture or dataset file the head was trained on."""
    trained, pictures, dataset = trained_skimage(), skimage_names(), trained_dataset_files()
    known = loaders(modules)
    uses: list[Use] = []
    for path, tree in modules.items():
        aliases = _data_aliases(tree)
        loads = bool(aliases) or any(isinstance(n, ast.Call) and (c := _dotted(n.func))
                                     and c.rsplit(".", 1)[-1] in known for n in ast.walk(tree))
        mentions_datasets = "datasets" in ast.unparse(tree)

        def flag(node: ast.AST, name: object, how: str) -> None:
            if isinstance(name, str) and name in trained:
                uses.append(Use(path, getattr(node, "lineno", 0), name, how))

        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _dotted(node.value) in aliases:
                flag(node, node.attr, "skimage.data attribute")
            elif isinstance(node, ast.Call):
                callee = _dotted(node.func)
                if callee == "getattr" and len(node.args) >= 2 and _dotted(node.args[0]) in aliases:
                    if isinstance(node.args[1], ast.Constant):
                        flag(node, node.args[1].value, "getattr on skimage.data")
                elif callee and (short := callee.rsplit(".", 1)[-1]) in known:
                    arg = _call_arg(node, known[short])
                    if isinstance(arg, ast.Constant):
                        flag(node, arg.value, f"{short}() argument")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in known:
                index, _ = known[node.name]
                positional = node.args.posonlyargs + node.args.args
                defaults = dict(zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults))
                if isinstance(default := defaults.get(positional[index]), ast.Constant):
                    flag(default, default.value, f"{node.name}() default")
            elif loads and isinstance(node, (ast.List, ast.Tuple, ast.Set)) and node.elts and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                values = {e.value for e in node.elts}  # type: ignore[attr-defined]
                if len(values) >= 2 and values <= pictures:  # not ("photo", "logo"): kinds of picture
                    for e in node.elts:
                        flag(e, e.value, "list of scikit-image pictures")  # type: ignore[attr-defined]
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if loads and IMAGE_SUFFIX.search(text) and "://" not in text:
                    flag(node, IMAGE_SUFFIX.sub("", text.rsplit("/", 1)[-1]), "file named after a picture")
                if mentions_datasets and dataset and IMAGE_SUFFIX.search(text):
                    rel = re.sub(r"^.*?\b(?=(photos|logos)/)", "", text)
                    hit = rel in dataset or any(f"{kind}/{rel}" in dataset for kind in ("photos", "logos"))
                    if hit:
                        uses.append(Use(path, node.lineno, text, "trained-on dataset file"))
    return uses


def test_no_test_uses_a_picture_the_cnn_was_trained_on() -> None:
    modules = _modules(p for p in TESTS.rglob("*.py") if p.resolve() != Path(__file__).resolve())
    uses = [u for u in scan(modules) if not any(u.path.startswith(folder) for folder in WHITELIST)]
    unexpected = sorted({str(u) for u in uses if (u.path, u.name) not in PENDING})
    assert unexpected == [], "pictures the CNN head was trained on (training/data.py) used as test fixtures:\n" + \
        "\n".join(unexpected)
    assert {(u.path, u.name) for u in uses} >= PENDING, "a PENDING entry is no longer used: remove it"


def test_the_scan_sees_the_fixtures_the_tests_do_use() -> None:
    # Not blind: held-out pictures used each way are found (a scan with the held-out names as trained).
    modules = _modules([TESTS / "images.py", TESTS / "matching" / "test_checks.py",
                        TESTS / "matching" / "core" / "test_matcher.py", TESTS / "matching" / "core" / "test_pdq.py",
                        TESTS / "matching" / "core" / "test_cnn_backbone.py"])
    known = loaders(modules)
    assert {"photo", "photo_png", "resized_jpeg", "truncated_jpeg", "_skimage"} <= set(known)
    trained_skimage.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(f"{__name__}.SKIMAGE_TRAIN", ("coffee", "rocket", "astronaut", "horse"))
            seen = {(u.path.rsplit("/", 1)[-1], u.name, u.how.split()[0]) for u in scan(modules)}
    finally:
        trained_skimage.cache_clear()
    assert ("test_checks.py", "rocket", "photo_png()") in seen
    assert ("test_checks.py", "coffee", "resized_jpeg()") in seen
    assert ("images.py", "coffee", "truncated_jpeg()") in seen  # a default
    assert ("images.py", "horse", "list") in seen  # PHOTOS
    assert ("test_matcher.py", "astronaut", "_skimage()") in seen
    assert ("test_pdq.py", "coffee", "list") in seen
    assert ("test_cnn_backbone.py", "rocket", "skimage.data") in seen


SNIPPET = '''
import skimage.data
from skimage import data as sk
from tests.images import photo_png

def load(which):
    return getattr(sk, which)()

def wrapped(size, name="moon"):
    return load(name)

NAMES = ("astronaut", "page")
KEYS = ["unrelated/text.jpg"]

def test_it():
    photo_png("logo"), skimage.data.clock(), getattr(skimage.data, "brick")(), sk.stereo_motorcycle()
    wrapped(3, "cell"), load(which="retina"), load("color")
    open("../shared/datasets/%s")
'''


def test_every_kind_of_use_is_caught(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    helper = ast.parse((TESTS / "images.py").read_text())
    dataset = sorted(trained_dataset_files())
    snippet = ast.parse(SNIPPET % (dataset[0] if dataset else "photos/none.png"))
    uses = scan({"tests/images.py": helper, "tests/test_snippet.py": snippet})
    found = {(u.name, u.how) for u in uses if u.path == "tests/test_snippet.py"}
    assert found >= {
        ("logo", "photo_png() argument"), ("clock", "skimage.data attribute"), ("brick", "getattr on skimage.data"),
        ("stereo_motorcycle", "skimage.data attribute"), ("moon", "wrapped() default"), ("cell", "wrapped() argument"),
        ("retina", "load() argument"), ("color", "load() argument"), ("page", "list of scikit-image pictures"),
        ("text", "file named after a picture"),
    }, found
    assert ("astronaut", "list of scikit-image pictures") not in found  # held out: fine
    if dataset:
        assert any(u.how == "trained-on dataset file" for u in uses)


def test_the_held_out_pictures_the_tests_rely_on_are_not_trained_on() -> None:
    from tests.images import PHOTOS

    assert not set(PHOTOS) & trained_skimage()
    assert "logo" in trained_skimage() and "motorcycle_left" in trained_skimage()
