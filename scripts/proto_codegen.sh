#!/usr/bin/env bash
# Regenerates proto/*_pb2*.py from proto/*.proto with the pinned grpcio-tools.
# The .proto files are staged under mltrail/proto/ so that the generated
# modules import each other as `mltrail.proto.X_pb2`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$here/proto"}
python=${PYTHON:-python3}
want=$(sed -n 's/^grpcio-tools==//p' "$here/scripts/codegen-requirements.txt")
have=$("$python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "proto_codegen: needs grpcio-tools==$want (found '${have:-none}'): pip install -r scripts/codegen-requirements.txt" >&2
  exit 1
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src/mltrail/proto" "$stage/out"
cp "$here"/proto/*.proto "$stage/src/mltrail/proto/"
(cd "$stage/src" && "$python" -m grpc_tools.protoc -I. \
  --python_out="$stage/out" --pyi_out="$stage/out" --grpc_python_out="$stage/out" \
  mltrail/proto/*.proto)
mkdir -p "$out"
cp "$stage"/out/mltrail/proto/*.py "$stage"/out/mltrail/proto/*.pyi "$out/"
