"""tm_alloc's C tests on the host: the semantics suite under ASan/UBSan, a 1M-op random trace
with the invariant checker after every op (optimised build, and shorter runs sanitised), the
fuzzer over op sequences (libFuzzer when clang has it, else the same target on seeded random
inputs), and threads sharing heaps under ThreadSanitizer with the lock hook (and without it, where
ThreadSanitizer must see the races)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tinymem.alloc import C_SOURCES
from tinymem.sim.host import SANITIZE_FLAGS, WARN_FLAGS

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "firmware" / "runtime"
C_TESTS = Path(__file__).resolve().parent / "c"
needs_gcc = pytest.mark.skipif(not shutil.which("gcc"), reason="gcc missing")


def build(out: Path, test: str, flags: list[str], cc: str = "gcc") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    exe = out / (Path(test).stem + ("_san" if "-fsanitize=address,undefined" in " ".join(flags) else ""))
    cmd = [cc, *WARN_FLAGS, *flags, "-I", str(RUNTIME), "-I", str(C_TESTS), *(str(RUNTIME / n) for n in C_SOURCES),
           str(C_TESTS / test), "-o", str(exe)]
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


def _has_tsan(tmp_path: Path) -> bool:
    probe = tmp_path / "tsan_probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    proc = subprocess.run(["gcc", "-fsanitize=thread", str(probe), "-o", str(tmp_path / "tsan_probe")],
                          capture_output=True)
    return proc.returncode == 0 and subprocess.run([str(tmp_path / "tsan_probe")], capture_output=True).returncode == 0


@needs_gcc
def test_threads_under_tsan_with_the_lock_hook(tmp_path):
    if not _has_tsan(tmp_path):
        pytest.skip("gcc has no working ThreadSanitizer here")
    flags = ["-D_POSIX_C_SOURCE=200809L", "-g", "-O1", "-fsanitize=thread", "-pthread"]
    locked = build(tmp_path / "locked", "alloc_threads.c", flags + ["-include", str(C_TESTS / "alloc_lock_pthread.h")])
    assert "threads 4 ops 20000" in run(locked, 4, 20000)
    unlocked = build(tmp_path / "unlocked", "alloc_threads.c", flags)  # no lock: the races must show
    proc = subprocess.run([str(unlocked), "4", "2000"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TSAN_OPTIONS": "halt_on_error=1"})
    assert proc.returncode != 0 and "ThreadSanitizer: data race" in proc.stderr


@needs_gcc
@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc missing")
def test_the_irq_lock_builds_for_cortex_m(tmp_path):
    """TM_ALLOC_LOCK_IRQ on Cortex-M0+ and M4: the critical section is inline asm. (It runs in the
    board semantics test, test_alloc_replay.py.)"""
    for cpu in ("cortex-m0plus", "cortex-m4"):
        for src in C_SOURCES:
            proc = subprocess.run(["arm-none-eabi-gcc", *WARN_FLAGS, "-O2", f"-mcpu={cpu}", "-mthumb",
                                   "-DTM_ALLOC_LOCK_IRQ=1", "-I", str(RUNTIME), "-c", str(RUNTIME / src),
                                   "-o", str(tmp_path / f"{cpu}-{src}.o")], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
