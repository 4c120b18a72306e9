"""ModelStreamInfer for decoupled models: each response as the model sends it.

As Triton does: every response carries the request's id and the parameter
`triton_final_response` (true on the last one); an error the model sends is a
response with `error_message`; a final flag sent without a response becomes
an empty response only when the request asked for it with the
`triton_enable_empty_final_response` parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from tritonlite.core.authorization import Caller
from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.response_stream import StreamItem
from tritonlite.errors import TritonLiteError
from tritonlite.frontends.grpc.tensor_codec import (
    FINAL_PARAM,
    ParsedInferRequest,
    stream_answer_error_bytes,
    stream_error_bytes,
    stream_response_bytes,
    to_core_request,
)
from tritonlite.protos import grpc_service_pb2 as pb

if TYPE_CHECKING:
    from tritonlite.frontends.grpc.inference import StreamEnd

log = logging.getLogger("tritonlite.grpc")

EMPTY_FINAL_PARAM = "triton_enable_empty_final_response"


def is_decoupled_request(server: InferenceServer, parsed: ParsedInferRequest, caller: Caller
                         ) -> bool:
    if parsed.error:
        return False
    msg = parsed.message
    return server.is_decoupled(msg.model_name, msg.model_version, caller=caller)


def _wants_empty_final(msg: pb.ModelInferRequest) -> bool:
    param = msg.parameters.get(EMPTY_FINAL_PARAM) if msg.parameters else None
    return bool(param is not None and param.WhichOneof("parameter_choice") == "bool_param"
                and param.bool_param)


def _empty_final(msg: pb.ModelInferRequest) -> bytes:
    """An empty final response (asked for with EMPTY_FINAL_PARAM)."""
    response = pb.ModelInferResponse(
        id=msg.id, model_name=msg.model_name, model_version=msg.model_version
    )
    response.parameters[FINAL_PARAM].bool_param = True
    return pb.ModelStreamInferResponse(infer_response=response).SerializeToString()


def _payload(item: StreamItem, msg: pb.ModelInferRequest, empty_final: bool) -> bytes | None:
    if item.error is not None:
        return stream_answer_error_bytes(item.error.message, msg, item.final)
    if item.result is not None:
        item.result.parameters[FINAL_PARAM] = item.final
        return stream_response_bytes(item.result)
    return _empty_final(msg) if empty_final else None


async def stream_decoupled(
    server: InferenceServer,
    parsed: ParsedInferRequest,
    write: Callable[[bytes], Awaitable[object]],
    caller: Caller,
    ending: StreamEnd | None = None,
) -> None:
    """Answer one request of a stream with all of its responses; with `ending`
    (a triton_grpc_error stream) an error response ends the stream instead."""
    msg = parsed.message
    try:
        request = to_core_request(parsed)  # reads (and drops) EMPTY_FINAL_PARAM's type
        request.caller = caller
        empty_final = _wants_empty_final(msg)
        events = server.infer_stream(request)
        try:
            async for item in events:
                try:
                    if item.error is not None and ending is not None:
                        ending.end(item.error)
                        return
                    payload = _payload(item, msg, empty_final)
                finally:
                    item.release()
                if payload is not None:
                    await write(payload)
        finally:
            await events.aclose()
    except TritonLiteError as exc:
        if not exc.in_response:
            await write(stream_error_bytes(exc.message, msg.id))
        elif ending is not None:
            ending.end(exc)
        else:
            await write(stream_answer_error_bytes(exc.message, msg, True))
    except Exception as exc:  # a bug: report it on the stream, keep the stream
        log.exception("decoupled stream request failed")
        await write(stream_error_bytes(f"internal error: {exc}", msg.id))
