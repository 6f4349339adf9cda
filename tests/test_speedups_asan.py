"""The C paths under AddressSanitizer: they read hostile bytes (captures, handshakes).

The extension is built again with `-fsanitize=address` into a copy of the package and its
tests, and child Pythons (their allocations through malloc, so that ASan sees every buffer's
end) run tests/test_speedups.py, which holds each C path to its Python reference on
generated, mutated and cut inputs, and a longer fuzz of the ClientHello and DNS readers. Any
read or write outside a buffer ends the child with ASan's report. Skipped without gcc and its
libasan.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GCC = shutil.which("gcc")


def _libasan() -> Path | None:
    if GCC is None:
        return None
    found = subprocess.run([GCC, "-print-file-name=libasan.so"], capture_output=True,
                           text=True, check=False).stdout.strip()
    path = Path(found).resolve() if found else None
    return path if path is not None and path.is_file() else None


LIBASAN = _libasan()

FUZZ = """
import random, sys
from analyzer import speedups
from tests.test_dns import zoom_cname_response
from tests.test_tls import FULL_CLIENT_EXTENSIONS, client_hello_body, ext, sni_ext, vec

native = speedups.native
assert native is not None and native.__file__.startswith(sys.argv[1]), native
rng = random.Random(int(sys.argv[2]))
hellos = [client_hello_body(FULL_CLIENT_EXTENSIONS), client_hello_body(None),
          client_hello_body(b""), client_hello_body(sni_ext(b"a" * 300) + ext(16, vec(b"", 2)))]
messages = [zoom_cname_response()]

def mutated(seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(0, 4)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.5:
        return bytes(data[: rng.randint(0, len(data))])
    return bytes(data) + rng.randbytes(rng.randint(0, 8))

read = 0
for _ in range(int(sys.argv[3])):
    read += native.client_hello(mutated(rng.choice(hellos)), rng.random() < 0.3) is not None
    native.dns_message(mutated(rng.choice(messages)))
    native.dns_message(rng.randbytes(rng.randint(0, 80)))
print(read)
"""


needs_asan = pytest.mark.skipif(LIBASAN is None, reason="gcc with libasan is not installed")


@pytest.fixture(scope="module")
def asan_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the package, its tests and samples with the extension built under ASan, and
    the environment its children run in."""
    assert GCC is not None and LIBASAN is not None
    tree = tmp_path_factory.mktemp("asan")
    skip = shutil.ignore_patterns("*.so", "__pycache__", "work")
    for folder in ("analyzer", "tests", "bench"):
        shutil.copytree(ROOT / folder, tree / folder, ignore=skip)
    (tree / "captures").mkdir()
    for sample in (ROOT / "captures").glob("*.pcap*"):
        shutil.copy(sample, tree / "captures")
    shutil.copy(ROOT / "pyproject.toml", tree)
    library = tree / "analyzer" / f"_speedups{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run([GCC, "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address",
                    "-fno-omit-frame-pointer", f"-I{sysconfig.get_paths()['include']}",
                    str(ROOT / "analyzer" / "_speedups.c"), "-o", str(library)], check=True)
    env = {**os.environ, "LD_PRELOAD": str(LIBASAN), "PYTHONMALLOC": "malloc",
           "ASAN_OPTIONS": "detect_leaks=0", "PYTHONPATH": str(tree)}
    env.pop("CONFSCOPE_PURE_PYTHON", None)
    return tree, env


@needs_asan
def test_c_paths_pass_their_tests_under_asan(asan_tree: tuple[Path, dict[str, str]]) -> None:
    tree, env = asan_tree
    built = [sys.executable, "-c", "from analyzer import speedups; print(speedups.native.__file__)"]
    assert subprocess.run(built, env=env, cwd=tree, capture_output=True, text=True,
                          check=True).stdout.startswith(str(tree))  # (not skipped: C in use)
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider", "-x",
         # (all but the longest, a replay of the samples and corpus: ASan makes it 30 s)
         "-k", "not corpus_and_sample_captures", "tests/test_speedups.py"],
        env=env, cwd=tree, capture_output=True, text=True, timeout=900, check=False)
    assert child.returncode == 0, (child.stdout + child.stderr)[-4000:]
    passed = re.search(r"(\d+) passed", child.stdout)
    assert passed is not None and int(passed.group(1)) >= 50, child.stdout[-2000:]


@needs_asan
def test_c_readers_stay_inside_their_buffers(asan_tree: tuple[Path, dict[str, str]]) -> None:
    tree, env = asan_tree
    child = subprocess.run([sys.executable, "-c", FUZZ, str(tree), "7", "20000"], env=env,
                           cwd=tree, capture_output=True, text=True, timeout=600, check=False)
    assert child.returncode == 0, child.stderr[-3000:]
    assert int(child.stdout) > 0  # (some hellos were read by C, not all left to Python)
