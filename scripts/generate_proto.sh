#!/usr/bin/env bash
# Regenerate the Python modules of the camserve.v1 contract (committed under camserve/v1/).
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-.venv/bin/python}" -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. --pyi_out=. \
    proto/camserve/v1/explain.proto
