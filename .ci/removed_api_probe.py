"""Must FAIL type checking: calls API that TensorRT 10 removed. .ci/run asserts mypy rejects
it, proving the stubs check would catch such a call in harness/."""

from harness.backends import trt_api


def removed_calls(engine: trt_api.trt.ICudaEngine, context: trt_api.trt.IExecutionContext) -> None:
    engine.get_binding_index("imgs")
    context.execute_async_v2([], 0)
