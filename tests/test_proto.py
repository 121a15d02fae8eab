"""The generated gRPC code is what grpcio-tools makes from proto/ today (never edited by hand)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ["textgen_pb2.py", "textgen_pb2.pyi", "textgen_pb2_grpc.py"]


def test_generated_code_is_up_to_date_with_the_proto(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "proto/textgen/v1/textgen.proto")],
        check=True,
    )
    stale = [name for name in GENERATED
             if (tmp_path / "textgen/v1" / name).read_bytes() != (ROOT / "textgen/v1" / name).read_bytes()]
    assert not stale, f"textgen/v1/{', '.join(stale)} out of date with proto/: run `make proto` and commit"
