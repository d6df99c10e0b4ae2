"""Build-time check that ISA-specific objects cannot leak wide code to narrower CPUs.

An object built from <family>_avx2.cpp / _avx512.cpp / _amx.cpp is compiled with that
level's instruction-set flags. Any inline or template function it defines is a weak
symbol; if another object defines the same name, the linker keeps one copy for
every caller, so an AVX-512 build of, say, std::vector<float>::_M_fill_assign could
end up running on an AVX2-only CPU and die with SIGILL. Such functions must therefore
live in a namespace named after the level (avx2_impl, avx512_isa, dw_avx2, ...).

Usage: check_isa_symbols.py --nm NM object.o [object.o ...]
Exits 1 and lists the offending symbols when one is found.
"""
import argparse
import os
import re
import subprocess
import sys

LEVEL_TAGS = ("avx512", "avx2", "amx")  # longest first: an _avx512 file is not an _avx2 one
DATA_PREFIXES = ("typeinfo", "vtable", "VTT", "guard variable", "DW.ref.", "construction vtable")


def level_of(path: str):
    name = os.path.basename(path)
    for tag in LEVEL_TAGS:
        if re.search(rf"_{tag}\.(cpp|cc)\.o(bj)?$", name):
            return tag
    return None


def weak_code_symbols(nm: str, path: str):
    out = subprocess.run([nm, "-C", "--defined-only", path], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] == "W" and not parts[2].startswith(DATA_PREFIXES):
            yield parts[2]


def in_level_namespace(symbol: str, tag: str) -> bool:
    head = symbol.split("(", 1)[0]
    return re.search(rf"(^|[\s:<,])\w*{tag}\w*::", head) is not None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nm", default="nm")
    ap.add_argument("objects", nargs="+")
    args = ap.parse_args()
    bad = []
    for obj in args.objects:
        tag = level_of(obj)
        if tag is None:
            continue
        bad += [f"{os.path.basename(obj)}: {s}" for s in weak_code_symbols(args.nm, obj) if not in_level_namespace(s, tag)]
    if bad:
        print("check_isa_symbols: ISA objects define inline/template code outside their level's namespace;\n"
              "move it into the level namespace or call a non-inline function of the generic build:", file=sys.stderr)
        for b in bad:
            print("  " + b, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
