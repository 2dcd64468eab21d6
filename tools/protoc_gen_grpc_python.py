"""buf plugin shim: grpcio-tools has no protoc-gen-grpc_python, so run its protoc on the request's descriptors."""

import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as scratch:
        descriptor_set = Path(scratch, "descriptors.pb")
        descriptor_set.write_bytes(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out_dir = Path(scratch, "out")
        out_dir.mkdir()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"--descriptor_set_in={descriptor_set}",
                f"--grpc_python_out={out_dir}",
                *request.file_to_generate,
            ],
            check=True,
        )
        for generated in sorted(out_dir.rglob("*.py")):
            response.file.add(name=str(generated.relative_to(out_dir)), content=generated.read_text())
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
