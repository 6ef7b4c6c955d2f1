"""The camserve.v1 gRPC contract: the committed modules match the proto, and it offers what clients are promised."""
from __future__ import annotations

from pathlib import Path

import grpc_tools
import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"


@pytest.fixture(scope="module")
def contract():
    from camserve.v1 import explain_pb2
    return explain_pb2


def test_the_committed_modules_are_generated_from_the_proto(tmp_path):
    include = Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main(["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={tmp_path}",
                          f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}",
                          str(PROTO / "camserve" / "v1" / "explain.proto")])
    assert status == 0
    for name in ("explain_pb2.py", "explain_pb2_grpc.py", "explain_pb2.pyi"):
        fresh = (tmp_path / "camserve" / "v1" / name).read_text()
        assert fresh == (ROOT / "camserve" / "v1" / name).read_text(), f"run scripts/generate_proto.sh ({name})"


def test_explain_service_offers_every_call(contract):
    service = contract.DESCRIPTOR.services_by_name["ExplainService"]
    calls = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert calls == {"Explain": (False, False), "ExplainStream": (True, True), "Evaluate": (False, False),
                     "ListModels": (False, False), "GetModel": (False, False), "ListMethods": (False, False)}
    assert contract.DESCRIPTOR.package == "camserve.v1"


def test_requests_carry_what_the_issue_asks_for(contract):
    request = contract.ExplainRequest(
        model="mobilenet_v2", version="1", method="scorecam", layers=["/features/18"],
        images=[contract.Image(encoded=b"png"), contract.Image(tensor=contract.Tensor(
            shape=[3, 224, 224], dtype=contract.DATA_TYPE_FLOAT32, data=b"\0" * 4))],
        targets=contract.Targets(weights=contract.ClassWeights(values=[0.5, 0.5], classes=2)),
        options={"variant": contract.OptionValue(text="official")},
        output=contract.OUTPUT_KIND_BOTH, size=contract.OUTPUT_SIZE_ORIGINAL)
    again = contract.ExplainRequest.FromString(request.SerializeToString())
    assert again == request and again.images[1].WhichOneof("source") == "tensor"
    assert again.targets.WhichOneof("kind") == "weights"
    assert contract.Targets(top_k=3).WhichOneof("kind") == "top_k"
    scores = contract.MethodScores(method="gradcam", metrics={"adcc": contract.Interval(mean=88.1, low=86.2,
                                                                                       high=89.7, defined=True)})
    assert contract.MethodScores.FromString(scores.SerializeToString()).metrics["adcc"].high == pytest.approx(89.7)
