"""The build hook: compiles the gRPC stubs from the proto into jsonkv_client/_pb/ of the wheel,
so an installed client needs neither protoc nor the repository, and puts the proto into the
sdist, so a wheel builds from the sdist alone. Nothing generated is ever written to the source
tree. The proto is the sdist's own `proto/`, or else the repository's (two folders up)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# protoc writes an absolute import of the proto's package; inside jsonkv_client it is relative.
_ABSOLUTE_IMPORT = "from jsonkv.v1 import jsonkv_pb2 as jsonkv_dot_v1_dot_jsonkv__pb2"
_RELATIVE_IMPORT = "from . import jsonkv_pb2 as jsonkv_dot_v1_dot_jsonkv__pb2"
_GENERATED = ("jsonkv_pb2.py", "jsonkv_pb2.pyi", "jsonkv_pb2_grpc.py")


class ProtoBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def _proto_root(self) -> Path:
        root = Path(self.root)
        for candidate in (root / "proto", root.parent.parent / "proto"):
            if (candidate / "jsonkv" / "v1" / "jsonkv.proto").is_file():
                return candidate
        raise RuntimeError(
            f"no proto/jsonkv/v1/jsonkv.proto in {root} or in the repository around it"
        )

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        proto = self._proto_root()
        if self.target_name == "sdist":
            if proto != Path(self.root) / "proto":
                build_data["force_include"][str(proto)] = "proto"
            return
        self._out = Path(tempfile.mkdtemp(prefix="jsonkv-client-stubs-"))
        _generate(proto, self._out)
        for name in (*_GENERATED, "__init__.py"):
            build_data["force_include"][str(self._out / name)] = f"jsonkv_client/_pb/{name}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        out = getattr(self, "_out", None)
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)


def _generate(proto: Path, out: Path) -> None:
    from grpc_tools import protoc

    # grpc_tools ships google/protobuf/*.proto (struct.proto is imported) as package data.
    well_known = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(proto)) for p in proto.rglob("*.proto"))
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc}) on {protos}")
    generated = out / "jsonkv" / "v1"
    for name in _GENERATED:
        text = (generated / name).read_text()
        if name == "jsonkv_pb2_grpc.py":
            if _ABSOLUTE_IMPORT not in text:
                raise RuntimeError(f"{name} no longer imports {_ABSOLUTE_IMPORT!r}")
            text = text.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT)
        (out / name).write_text(text)
    (out / "__init__.py").write_text('"""The gRPC stubs of jsonkv.v1, generated at build."""\n')
    shutil.rmtree(out / "jsonkv")
