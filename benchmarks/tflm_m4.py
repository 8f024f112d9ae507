"""TensorFlow Lite Micro itself on the emulated Cortex-M4 (QEMU mps2-an386): flash, arena and
instructions per Invoke(), with TFLM's reference kernels and with its CMSIS-NN kernels.

    .venv/bin/python benchmarks/tflm_m4.py --build-types default release_with_logs --profile \
        --out benchmarks/tflm_m4_measured.json [--models NAME ...] [--mirror /work/.mirror] [--tflm-src DIR] ...

Sources. By default everything comes from bare git mirrors (the `fetch` tool's snapshots, one
`owner+name/repo` each under --mirror): TFLM at the mirror's HEAD, then each third-party library at
exactly the commit or tag TFLM pins in tensorflow/lite/micro/tools/make/{flatbuffers_download.sh,
third_party_downloads.inc, ext_libs/cmsis_download.sh, ext_libs/cmsis_nn_download.sh}, with TFLM's
flatbuffers.patch applied as its download script does. Mirrors needed: tensorflow+tflite-micro,
google+flatbuffers, ARM-software+CMSIS-NN, ARM-software+CMSIS_6, ARM-software+Cortex_DFP,
google+gemmlowp, google+ruy. --tflm-src/--cmsis-nn/--cmsis/--cortex-dfp/--flatbuffers/--gemmlowp/
--ruy take extracted trees instead (recorded as such in the JSON).

TFLM's Makefile downloads its dependencies, so it is not used: this script compiles the same
sources with the flags it would use for TARGET=cortex_m_generic TARGET_ARCH=cortex-m4+fp
TOOLCHAIN=gcc BUILD_TYPE=default (core at -Os, kernels and CMSIS-NN at -O2; OPTIMIZED_KERNEL_DIR=
cmsis_nn swaps in kernels/cmsis_nn/*.cc by file name) into two static libraries, cached under
--build. Each model is then linked with -Wl,--gc-sections and a MicroMutableOpResolver holding
only its own ops, run under `qemu-system-arm -icount shift=0` (1 ns per instruction; SysTick at
25 MHz, so a tick is 40 instructions, the method tinymem's own board runs use), and its output is
compared with LiteRT's BUILTIN_REF kernels (tests/reference.py). Build types: `default` is what
the Makefile builds unless told otherwise (every TFLITE_DCHECK live); `release_with_logs` adds
-DNDEBUG. The reference kernels' inner loops are full of DCHECKs, so the two differ 4-6x there.
Flash is also split by origin (TFLM library / newlib+libgcc+libstdc++ / our harness) from the
link map; those are input-section sizes before string merging, so they can sum to ~1 KB more.

Needs Debian's libstdc++-arm-none-eabi-newlib (TFLM is C++; tinymem's firmware is C and does not).
CI cannot run this (no network, no mirrors): its results are committed as tflm_m4_measured.json.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tflite
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks" / "tflm_m4"
sys.path.insert(0, str(ROOT / "tests"))
from reference import litert_run  # noqa: E402

MODELS = ["mobilenetv2_035_96", "mobilenetv2_050_144", "dscnn_kws", "digits_cnn"]
KERNEL_SETS = ["reference", "cmsis_nn"]
# The issue's figures (TFLM 90b983c, "default flags", cortex-m4+fp, GCC 12.2), to set ours beside.
# Measured here, its reference-kernel figures are the -DNDEBUG build's (release_with_logs).
ISSUE = {"mobilenetv2_035_96": {"reference": 185.6e6, "cmsis_nn": 46.0e6},
         "mobilenetv2_050_144": {"reference": 602.7e6, "cmsis_nn": 146.5e6},
         "dscnn_kws": {"reference": 43.0e6, "cmsis_nn": 7.7e6},
         "digits_cnn": {"reference": 3.1e6, "cmsis_nn": 0.82e6}}
BOARD = json.loads((ROOT / "boards" / "mps2_an386.json").read_text())["tinymem"]
SRAM = BOARD["sram_bytes"]  # 256 KB: tinymem's limit for this board
QEMU_SRAM = 4 << 20  # QEMU maps 4 MB of SSRAM at 0x20000000: used only if the arena needs it
STACK_MIN = 16 << 10
MAKE = "tensorflow/lite/micro/tools/make/"
GCC = "arm-none-eabi-"

# TFLM's Makefile + targets/cortex_m_generic_makefile.inc, TARGET_ARCH=cortex-m4+fp, gcc.
WARNINGS = ["-Wsign-compare", "-Wdouble-promotion", "-Wunused-variable", "-Wunused-function", "-Wswitch",
            "-Wvla", "-Wall", "-Wextra", "-Wmissing-field-initializers", "-Wstrict-aliasing",
            "-Wno-unused-parameter"]
COMMON = ["-fno-unwind-tables", "-fno-asynchronous-unwind-tables", "-ffunction-sections", "-fdata-sections",
          "-fmessage-length=0", "-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON", *WARNINGS]
PLATFORM = ["-mcpu=cortex-m4", "-mfpu=auto",  # GCC_TARGET_ARCH=cortex-m4; FPU unset -> -mfpu=auto
            "-DTF_LITE_MCU_DEBUG_LOG", "-mthumb", "-mfloat-abi=hard", "-mlittle-endian", "-Wno-type-limits",
            "-Wno-unused-private-field", "-fomit-frame-pointer", "-MD", "-DCPU_M4=1", "-funsigned-char",
            '-DCMSIS_DEVICE_ARM_CORTEX_M_XX_HEADER_FILE="ARMCM4.h"', "-DARMCM4"]
CXX_ONLY = ["-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", "-Wnon-virtual-dtor"]
OPT = {"core": "-Os", "kernel": "-O2", "third_party_kernel": "-O2"}
# BUILD_TYPE=default keeps every TFLITE_DCHECK (no -DNDEBUG): in the reference kernels that is a
# bounds check per index of every Offset() in the innermost loops. release_with_logs is the
# Makefile's -DNDEBUG build, the one it recommends for profiling and benchmarking.
BUILD_TYPES = {"default": [], "release_with_logs": ["-DNDEBUG"]}
# tinymem's firmware link (codegen/templates/platformio/builder_main.py.j2); TFLM's Makefile
# also adds -Wl,--fatal-warnings, dropped: nosys.specs' stubs warn by design.
LINK = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=auto", "-mfloat-abi=hard", "-nostartfiles", "--specs=nano.specs",
        "--specs=nosys.specs", "-Wl,--gc-sections"]


def flags(kernels: str, build_type: str, dl: Path, tflm: Path) -> dict:
    """C++ and C flags (without -O) and include paths of one kernel set, in the Makefile's order."""
    defines = ["-DKERNELS_OPTIMIZED_FOR_SPEED"]  # OPTIMIZE_KERNELS_FOR's default
    inc = [f"-I{tflm}", f"-I{dl}", f"-I{dl}/gemmlowp", f"-I{dl}/flatbuffers/include", f"-I{dl}/kissfft",
           f"-I{dl}/ruy", f"-I{dl}/cmsis/Cortex_DFP/Device/ARMCM4/Include", f"-I{dl}/cmsis/CMSIS/Core/Include"]
    extra = []
    if kernels == "cmsis_nn":
        defines = ["-DCMSIS_NN", *defines]
        extra = ["-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0"]
        inc += [f"-I{dl}/cmsis", f"-I{dl}/cmsis_nn", f"-I{dl}/cmsis/CMSIS/Core/Include", f"-I{dl}/cmsis_nn/Include"]
    bt = BUILD_TYPES[build_type]
    return {"cxx": [*CXX_ONLY, *COMMON, *defines, *bt, "-std=c++17", *PLATFORM, *extra],
            "cc": ["-Wimplicit-function-declaration", *COMMON, *defines, *bt, "-std=c17", *PLATFORM, *extra],
            "includes": inc}


def run(cmd: list, **kw) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stdout}{p.stderr}")
    return p.stdout


# ---------------------------------------------------------------- sources -----------------------

def pins(tflm: Path) -> dict:
    """The third-party versions TFLM pins (the revisions its download scripts fetch)."""
    mk = tflm / MAKE
    cmsis = re.findall(r'ZIP_PREFIX="([0-9a-f]{40})"', (mk / "ext_libs/cmsis_download.sh").read_text())
    tp = (mk / "third_party_downloads.inc").read_text()
    return {"flatbuffers": re.search(r'ZIP_PREFIX="(v[\d.]+)"', (mk / "flatbuffers_download.sh").read_text())[1],
            "cmsis": cmsis[0], "cortex_dfp": cmsis[1],
            "cmsis_nn": re.search(r'ZIP_PREFIX_NN="([0-9a-f]{40})"',
                                  (mk / "ext_libs/cmsis_nn_download.sh").read_text())[1],
            "gemmlowp": re.search(r"gemmlowp/archive/([0-9a-f]{40})", tp)[1],
            "ruy": re.search(r"ruy/archive/([0-9a-f]{40})", tp)[1]}


MIRRORS = {"tflm": "tensorflow+tflite-micro", "flatbuffers": "google+flatbuffers", "cmsis": "ARM-software+CMSIS_6",
           "cortex_dfp": "ARM-software+Cortex_DFP", "cmsis_nn": "ARM-software+CMSIS-NN",
           "gemmlowp": "google+gemmlowp", "ruy": "google+ruy"}


def extract(mirror: Path, name: str, rev: str, dest: Path) -> dict:
    """`git archive` one revision of a bare mirror into dest (once); its provenance."""
    git = ["git", f"--git-dir={mirror / MIRRORS[name] / 'repo'}"]
    commit = run([*git, "rev-parse", f"{rev}^{{commit}}"]).strip()  # fails loudly if the pin is absent
    if not (dest / ".commit").is_file() or (dest / ".commit").read_text() != commit:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        subprocess.run(f"git --git-dir={mirror / MIRRORS[name] / 'repo'} archive {commit} | tar -x -C {dest}",
                       shell=True, check=True)
        (dest / ".commit").write_text(commit)
    return {"source": f"github.com/{MIRRORS[name].replace('+', '/')}", "revision": rev, "commit": commit}


def prepare_sources(args, cache: Path) -> tuple[Path, Path, dict]:
    """TFLM's root and a `downloads` folder laid out as its Makefile expects; provenance of each."""
    prov = {}
    if args.tflm_src:
        tflm, prov["tflm"] = Path(args.tflm_src).resolve(), {"source": str(args.tflm_src), "commit": "as given"}
    else:
        tflm = cache / "src/tflm"
        prov["tflm"] = extract(args.mirror, "tflm", "HEAD", tflm)
    want = pins(tflm)
    dl = cache / "src/downloads"
    for name, rev in want.items():
        given = getattr(args, name)
        dest = dl / ("cmsis/Cortex_DFP" if name == "cortex_dfp" else name)  # cmsis_download.sh nests it
        if given:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink() or dest.exists():
                dest.unlink() if dest.is_symlink() else shutil.rmtree(dest)
            shutil.copytree(given, dest, symlinks=True) if name == "flatbuffers" else dest.symlink_to(
                Path(given).resolve())
            prov[name] = {"source": str(given), "pinned_by_tflm": rev, "commit": "as given"}
        else:
            prov[name] = extract(args.mirror, name, rev, dest)
    # flatbuffers_download.sh applies TFLM's patch (no locale code, no heap in the builder).
    patch = tflm / MAKE / "flatbuffers.patch"
    fb = dl / "flatbuffers"
    if subprocess.run(["patch", "-p1", "-R", "--dry-run", "-s", "-f", "-d", fb, "-i", patch],
                      capture_output=True).returncode:
        run(["patch", "-p1", "-s", "-d", fb, "-i", patch])
    prov["flatbuffers"]["patch"] = f"{MAKE}flatbuffers.patch"
    return tflm, dl, prov


def specialize(files: list[Path], directory: Path) -> list[Path]:
    """TFLM's specialize_files.py: a same-named file in `directory` replaces the generic one."""
    return [directory / f.name if (directory / f.name).is_file() else f for f in files]


def library_sources(tflm: Path, dl: Path, kernels: str) -> list[tuple[Path, str]]:
    """(source, class) as in sources.inc: core -Os, kernels -O2, third-party kernels -O2."""
    micro = tflm / "tensorflow/lite/micro"
    core = [p for d in ("", "arena_allocator", "memory_planner", "tflite_bridge")
            for p in sorted((micro / d).glob("*.cc")) if not p.name.endswith(("_test.cc", "benchmark.cc"))]
    core += sorted(p for p in (tflm / "tensorflow").rglob("*.c*") if p.suffix in (".c", ".cc")
                   and not str(p).startswith((str(micro), str(tflm / "tensorflow/lite/experimental")))
                   and p.name != "array.cc")  # excluded unless BUILD_TYPE=no_tf_lite_static_memory
    core = specialize(core, micro / "cortex_m_generic")  # TARGET=cortex_m_generic: debug_log, micro_time
    block = re.search(r"MICROLITE_CC_KERNEL_SRCS := \\\n(.*?)\n\n", (tflm / MAKE / "sources.inc").read_text(), re.S)
    kern = [tflm / line.strip(" \\").replace("$(TENSORFLOW_ROOT)", "") for line in block[1].splitlines()]
    # Not compiled: the signal library's kernels (MICROLITE_CC_SIGNAL_KERNEL_SRCS, kissfft): no
    # model here uses them, and a static archive never links unreferenced members anyway.
    srcs = [(p, "core") for p in core]
    if kernels == "cmsis_nn":
        kern = specialize(kern, micro / "kernels/cmsis_nn")
        nn = sorted(p for p in (dl / "cmsis_nn/Source").rglob("*.c")
                    if not p.name.endswith(("_f16.c", "_f32.c")) and p.name != "arm_nntables_flt.c")
        srcs += [(p, "third_party_kernel") for p in nn]
    return srcs + [(p, "kernel") for p in kern]


def build_library(tflm: Path, dl: Path, kernels: str, build_type: str, cache: Path, jobs: int) -> tuple[Path, dict]:
    """libtensorflow-microlite.a for one kernel set; objects are reused while flags are unchanged."""
    fl = flags(kernels, build_type, dl, tflm)
    out = cache / f"lib-{build_type}-{kernels}"
    stamp = hashlib.sha256(json.dumps([fl, OPT]).encode()).hexdigest()
    if not (out / "stamp").is_file() or (out / "stamp").read_text() != stamp:
        shutil.rmtree(out, ignore_errors=True)
    (out / "obj").mkdir(parents=True, exist_ok=True)
    lib = out / "libtensorflow-microlite.a"
    jobs_list = []
    for src, cls in library_sources(tflm, dl, kernels):
        base = tflm if src.is_relative_to(tflm) else dl
        obj = out / "obj" / cls / src.relative_to(base).with_suffix(".o")
        if not obj.is_file() or obj.stat().st_mtime < src.stat().st_mtime:
            tool, f = (GCC + "gcc", fl["cc"]) if src.suffix == ".c" else (GCC + "g++", fl["cxx"])
            jobs_list.append((obj, [tool, *f, OPT[cls], *fl["includes"], "-c", src, "-o", obj]))
        obj.parent.mkdir(parents=True, exist_ok=True)
    if jobs_list:
        print(f"[{build_type} {kernels}] compiling {len(jobs_list)} files ({jobs} jobs)", file=sys.stderr)
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(lambda j: run(j[1]), jobs_list))
        lib.unlink(missing_ok=True)
    if not lib.is_file():
        run([GCC + "ar", "-r", lib, *sorted((out / "obj").rglob("*.o"))])
    (out / "stamp").write_text(stamp)
    return lib, {"cxxflags": fl["cxx"], "ccflags": fl["cc"], "opt": OPT,
                 "includes": [i.replace(str(cache), "$BUILD") for i in fl["includes"]]}


# ---------------------------------------------------------------- firmware ----------------------

def model_ops(model: bytes) -> list[str]:
    """MicroMutableOpResolver Add* calls for the model's builtin ops (CONV_2D -> AddConv2D)."""
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    m = tflite.Model.GetRootAsModel(model, 0)
    ops = []
    for i in range(m.OperatorCodesLength()):
        c = m.OperatorCodes(i)
        name = names[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())]
        ops.append("Add" + "".join(t if t[0].isdigit() else t.capitalize() for t in name.split("_")))
    return ops


def build_firmware(tflm: Path, dl: Path, lib: Path, kernels: str, bt: str, model: str, arena: int, ram: int,
                   variant: str, cache: Path) -> Path | None:
    """The ELF for one model (None if it does not fit `ram`). variant: probe (stop after
    AllocateTensors), measure, or profile (per-op ticks, a diagnostic build)."""
    d = cache / f"fw-{bt}-{kernels}" / model / variant
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    blob = (ROOT / "models" / f"{model}.tflite").read_bytes()
    (d / "model.bin").write_bytes(blob)
    (d / "sample.bin").write_bytes(np.load(ROOT / "models" / f"{model}.inputs.npy")[0].tobytes())
    ops = model_ops(blob)
    (d / "model.h").write_text(f"#define TFLM_NUM_OPS {len(ops)}\n#define TFLM_ADD_OPS(r) do {{ "
                               + " ".join(f"r.{op}();" for op in ops) + " } while (0)\n")
    # The board facts tinymem's board support reads (its tm_board_config.h.j2, from the board file).
    (d / "tm_board_config.h").write_text(
        f'#define TM_BOARD_ID "mps2_an386"\n#define TM_CLOCK_HZ {BOARD["clock_hz"]}u\n#define TM_EMULATED 1\n'
        f'#define TM_CYCLES_SYSTICK 1\n#define TM_CYCLES_KIND 2\n#define TM_UART_BASE {BOARD["serial"]["base"]}u\n'
        f'#define TM_UART_BAUD {BOARD["serial"]["baud"]}u\n#define TM_RX_WINDOW 1u\n')
    (d / "link.ld").write_text((HERE / "link.ld").read_text().replace("@RAM_LENGTH@", str(ram))
                               .replace("@STACK_MIN@", str(STACK_MIN)))
    fl = flags(kernels, bt, dl, tflm)
    board = ["-I", d, "-I", ROOT / "firmware/boards"]
    objs = []
    for src in ("startup.c", "uart_cmsdk.c", "cycles.c"):  # compiled as tinymem compiles them
        objs.append(d / src.replace(".c", ".o"))
        run([GCC + "gcc", *LINK[:4], "-std=c99", "-O2", "-ffunction-sections", "-fdata-sections", *board,
             "-c", ROOT / "firmware/boards" / src, "-o", objs[-1]])
    defs = [f"-DTFLM_ARENA_BYTES={arena}"] + {"probe": ["-DTFLM_PROBE_ONLY"], "profile": ["-DTFLM_PROFILE"]}.get(
        variant, [])
    objs.append(d / "main.o")
    run([GCC + "g++", *fl["cxx"], "-O2", *defs, *board, *fl["includes"], "-c", HERE / "main.cc", "-o", objs[-1]])
    objs.append(d / "model.o")
    run([GCC + "gcc", *LINK[:4], f'-DTFLM_MODEL_FILE="{d}/model.bin"', f'-DTFLM_SAMPLE_FILE="{d}/sample.bin"',
         "-c", HERE / "model.S", "-o", objs[-1]])
    elf = d / "firmware.elf"
    p = subprocess.run([GCC + "g++", *LINK, "-T", d / "link.ld", f"-Wl,-Map={d}/firmware.map", *objs, lib,
                        "-lm", "-o", elf], capture_output=True, text=True)
    if p.returncode:
        if "exceed RAM" in p.stderr or "region `RAM' overflowed" in p.stderr:
            return None
        raise SystemExit(f"link failed:\n{p.stderr}")
    return elf


def run_qemu(elf: Path, timeout: float = 900) -> dict:
    """Boot in QEMU (mps2-an386, -icount shift=0), UART0 to a file; the lines main.cc prints."""
    uart = elf.with_suffix(".uart.txt")
    cmd = ["qemu-system-arm", "-machine", BOARD["emulator"]["qemu_machine"], "-display", "none", "-monitor",
           "none", "-serial", f"file:{uart}", "-semihosting-config", "enable=on,target=native",
           "-icount", "shift=0", "-kernel", elf]
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    text = uart.read_text(errors="replace")
    if p.returncode or "DONE" not in text:
        raise SystemExit(f"{elf}: QEMU exit {p.returncode}\n{text}\n{p.stderr}")
    out = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    out["lines"] = text.splitlines()
    return out


def sizes(elf: Path) -> dict:
    """Bytes per output section, from `arm-none-eabi-size -A`."""
    sec = {}
    for line in run([GCC + "size", "-A", "-d", elf]).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("."):
            sec[parts[0]] = int(parts[1])
    return sec


def flash_by_origin(map_file: Path) -> dict:
    """.vectors+.text+.rodata+.data bytes by where the linker took them from (firmware.map):
    the TFLM library, the C/C++ runtime (newlib-nano, libgcc, libstdc++), or our harness."""
    out, section = {"tflm": 0, "toolchain": 0, "harness": 0}, None
    for line in map_file.read_text().split("Linker script and memory map", 1)[1].splitlines():
        if re.match(r"\.\S+", line):  # an output section starts in column 0
            section = line.split()[0]
        elif section in (".vectors", ".text", ".rodata", ".data"):
            m = re.match(r"\s+(?:\S+\s+)?0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+\.(?:o|obj|a\(.*\)))$", line)
            if m:
                origin = ("tflm" if "libtensorflow-microlite.a" in m[2] else "harness"
                          if str(map_file.parent) in m[2] else "toolchain")
                out[origin] += int(m[1], 16)
    return out


def measure(tflm, dl, lib, kernels, bt, model, cache, profile: bool) -> dict:
    blob = (ROOT / "models" / f"{model}.tflite").read_bytes()
    # Probe with all the SSRAM QEMU has: what arena does the interpreter take on this target?
    probe = run_qemu(build_firmware(tflm, dl, lib, kernels, bt, model, QEMU_SRAM - (256 << 10), QEMU_SRAM, "probe",
                                     cache))
    used = int(probe["ARENA_USED"])
    arena = (used + 16 + 15) // 16 * 16  # micro_interpreter.h: arena_used_bytes() + 16 for alignment
    ram = SRAM
    elf = build_firmware(tflm, dl, lib, kernels, bt, model, arena, ram, "measure", cache)
    if elf is None:  # does not fit tinymem's 256 KB: use QEMU's 4 MB, and say so
        ram = QEMU_SRAM
        elf = build_firmware(tflm, dl, lib, kernels, bt, model, arena, ram, "measure", cache)
    res = run_qemu(elf)
    hi, lo = map(int, res["TICKS"].split())
    ticks = (hi << 32) | lo
    got = bytes.fromhex(res["OUTPUT"].strip())
    x = np.load(ROOT / "models" / f"{model}.inputs.npy")[:1]
    want = litert_run(blob, [x])[0][0]
    diff = np.abs(np.frombuffer(got, want.dtype).astype(int) - want.reshape(-1).astype(int))
    sec = sizes(elf)
    return {"instructions_per_invoke": ticks * 1_000_000_000 // BOARD["clock_hz"], "systick_ticks": ticks,
            "text_bytes": sec[".text"] + sec.get(".vectors", 0), "rodata_bytes": sec[".rodata"],
            "data_bytes": sec.get(".data", 0), "other_flash_bytes": sum(sec.get(s, 0) for s in (
                ".ARM.exidx", ".ARM.extab", ".init_array")),
            "model_bytes": len(blob), "model_section_bytes": sec[".model"], "sample_bytes": sec[".sample"],
            "bss_bytes": sec.get(".bss", 0), "arena_used_bytes": int(res["ARENA_USED"]), "arena_bytes": arena,
            "ram_region_bytes": ram, "fits_256k_sram": ram == SRAM, "stack_high_water_bytes": int(res["STACK"]),
            "output_hex": got.hex(), "litert_output_hex": want.tobytes().hex(),
            "outputs_match_litert": bool(diff.max() == 0), "max_abs_diff_vs_litert": int(diff.max()),
            "flash_by_origin": flash_by_origin(elf.with_name("firmware.map")),
            "ops": model_ops(blob), **(profile_ops(tflm, dl, lib, kernels, bt, model, arena, ram, cache)
                                                        if profile else {})}


def profile_ops(tflm, dl, lib, kernels, bt, model, arena, ram, cache) -> dict:
    """Instructions by op type from the profiled build (its total exceeds the plain count a little)."""
    res = run_qemu(build_firmware(tflm, dl, lib, kernels, bt, model, arena, ram, "profile", cache))
    by_op: dict[str, int] = {}
    for line in res["lines"]:
        if line.startswith("OP "):
            _, tag, ticks = line.split()
            by_op[tag] = by_op.get(tag, 0) + int(ticks) * 1_000_000_000 // BOARD["clock_hz"]
    return {"profiled_instructions_by_op": by_op}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--kernels", nargs="+", default=KERNEL_SETS, choices=KERNEL_SETS)
    ap.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--build", type=Path, default=Path("/tmp/tflm-m4-build"))
    for name in ("tflm-src", "cmsis-nn", "cmsis", "cortex-dfp", "flatbuffers", "gemmlowp", "ruy"):
        ap.add_argument(f"--{name}", metavar="DIR", help="extracted tree instead of the mirror's")
    ap.add_argument("--build-types", nargs="+", default=["default"], choices=list(BUILD_TYPES))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="also a per-op profiled run (diagnostic)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    cache = args.build.resolve()
    tflm, dl, prov = prepare_sources(args, cache)
    results, build = {}, {}
    for bt in args.build_types:
        for kernels in args.kernels:
            lib, build[f"{bt} {kernels}"] = build_library(tflm, dl, kernels, bt, cache, args.jobs)
            for model in args.models:
                print(f"[{bt} {kernels}] {model}", file=sys.stderr)
                results.setdefault(bt, {}).setdefault(model, {})[kernels] = measure(
                    tflm, dl, lib, kernels, bt, model, cache, args.profile)
    table = Table(title="TFLM on QEMU mps2-an386 (Cortex-M4F), instructions per Invoke (-icount shift=0)")
    for col in ("build", "model", "kernels", "instructions", "issue", ".text", ".rodata", ".data", "model B", "arena",
                "RAM region", "= LiteRT"):
        table.add_column(col, justify="left" if col in ("model", "kernels") else "right")
    for bt, models in results.items():
        for model, per in models.items():
            for kernels, r in per.items():
                issue = ISSUE.get(model, {}).get(kernels)
                table.add_row(bt, model, kernels, f"{r['instructions_per_invoke'] / 1e6:.2f} M",
                              f"{issue / 1e6:.2f} M" if issue else "-", str(r["text_bytes"]), str(r["rodata_bytes"]),
                              str(r["data_bytes"]), str(r["model_bytes"]), str(r["arena_used_bytes"]),
                              f"{r['ram_region_bytes'] >> 10} KB",
                              "exact" if r["outputs_match_litert"] else f"max |d| {r['max_abs_diff_vs_litert']}")
    Console(stderr=True, width=200).print(table)
    if args.out:
        gcc = run([GCC + "gcc", "--version"]).splitlines()[0]
        doc = {"what": "TensorFlow Lite Micro on QEMU mps2-an386, measured by benchmarks/tflm_m4.py",
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "gcc": gcc, "qemu": run(["qemu-system-arm", "--version"]).splitlines()[0],
               "sources": prov, "build": {"target": "TARGET=cortex_m_generic TARGET_ARCH=cortex-m4+fp "
                                                    "TOOLCHAIN=gcc BUILD_TYPE=" + "|".join(args.build_types),
                                          "libraries": build,
                                          "link": LINK + ["-lm"], "main_cc": "-O2", "stack_min": STACK_MIN},
               "method": "instructions = SysTick ticks of the 2nd Invoke() x 1e9 / 25 MHz (-icount shift=0)",
               "results": results}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


MEASURED = HERE.parent / "tflm_m4_measured.json"


def load_measured(path: Path = MEASURED) -> dict:
    """The committed results: {build type: {model: {kernel set: {...}}}}, with their provenance."""
    return json.loads(path.read_text())


if __name__ == "__main__":
    sys.exit(main())
