"""Regenerate scheduler/podresources/v1/api_pb2*.py from api.proto (run: make proto)."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = "scheduler/podresources/v1/api.proto"


def main() -> int:
    """Run grpc_tools.protoc with the repository root as the include path."""
    include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        str(ROOT / PROTO),
    ]
    return protoc.main(args)


if __name__ == "__main__":
    sys.exit(main())
