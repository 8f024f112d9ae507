"""tm_alloc's C tests on the host: the semantics suite under ASan/UBSan, a 1M-op random trace
with the invariant checker after every op (optimised build, and shorter runs sanitised), and
the fuzzer over op sequences (libFuzzer when clang has it, else the same target on seeded random
inputs)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from tinymem.sim.host import SANITIZE_FLAGS, WARN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "firmware" / "runtime"
C_TESTS = Path(__file__).resolve().parent / "c"
needs_gcc = pytest.mark.skipif(not shutil.which("gcc"), reason="gcc missing")


def build(out: Path, test: str, flags: list[str], cc: str = "gcc") -> Path:
    exe = out / (Path(test).stem + ("_san" if "-fsanitize=address,undefined" in " ".join(flags) else ""))
    cmd = [cc, *WARN_FLAGS, *flags, "-I", str(RUNTIME), "-I", str(C_TESTS), str(RUNTIME / "tm_alloc.c"),
           str(RUNTIME / "tm_alloc_check.c"), str(C_TESTS / test), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def run(exe: Path, *args, timeout=120) -> str:
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_gcc
def test_semantics_under_asan_and_ubsan(tmp_path):
    out = run(build(tmp_path, "alloc_semantics.c", SANITIZE_FLAGS))
    assert out.splitlines()[-1] == "ok"


@needs_gcc
def test_semantics_optimised(tmp_path):
    assert run(build(tmp_path, "alloc_semantics.c", ["-O2"])).splitlines()[-1] == "ok"


@needs_gcc
def test_one_million_random_ops_with_the_checker_after_each(tmp_path):
    exe = build(tmp_path, "alloc_random.c", ["-O2"])
    out = run(exe, 1, 1_000_000)  # a 12 KiB heap: full most of the time, failures included
    assert "ops 1000000" in out
    run(exe, 2, 100_000, 1, 200_000)  # a 200 KB heap: many bitmap words, summaries exercised


@needs_gcc
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_random_ops_under_asan_and_ubsan(tmp_path, seed):
    exe = build(tmp_path, "alloc_random.c", SANITIZE_FLAGS)
    run(exe, seed, 30_000)
    run(exe, seed + 10, 10_000, 1, 100_000)


def _has_libfuzzer(tmp_path: Path) -> bool:
    if not shutil.which("clang"):
        return False
    probe = tmp_path / "probe.c"
    probe.write_text("int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n")
    return subprocess.run(["clang", "-fsanitize=fuzzer", str(probe), "-o", str(tmp_path / "probe")],
                          capture_output=True).returncode == 0


@needs_gcc
def test_fuzzer_over_op_sequences(tmp_path):
    if _has_libfuzzer(tmp_path):
        exe = build(tmp_path, "alloc_fuzz.c", ["-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                                                 "-fno-sanitize-recover=all"], cc="clang")
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        proc = subprocess.run([str(exe), "-max_total_time=8", "-max_len=2048", "-seed=1", str(corpus)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Done" in proc.stderr
    else:
        exe = build(tmp_path, "alloc_fuzz.c", SANITIZE_FLAGS + ["-DALLOC_FUZZ_STANDALONE"])
        assert run(exe, 400).startswith("ok")
