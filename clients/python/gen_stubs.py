"""Generates the Python stubs for jsonkv.v1 from ../../proto into gen/ (gitignored), afresh on
every run, so the stubs can never drift from the proto. Run: .venv/bin/python gen_stubs.py"""

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "gen"


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    # grpc_tools ships google/protobuf/*.proto (struct.proto is imported) as package data.
    well_known = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            *protos,
        ]
    )
    if rc == 0:
        print(f"gen_stubs: {len(protos)} proto file(s) -> {OUT.relative_to(HERE)}/")
    return rc


if __name__ == "__main__":
    sys.exit(main())
