"""HTTP routes. Handlers stay thin: validate, admit, run `serving.service` work in the inference pool."""

from __future__ import annotations

import base64
import hmac
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, Security, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.background import BackgroundTask

from serving.errors import ApiError, error_response
from serving.holder import LoadedModel
from serving.metrics import CONTENT_TYPE
from serving.schemas import ERROR_RESPONSES, ModelInfo, PredictResponse
from serving.service import InferenceResult, run_inference

router = APIRouter()

# one encoder for every answer: json.dumps builds a new one each call, and the answer holds no cycles to look for
_ANSWER_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="needed when the server has keys")


def _services(request: Request):
    return request.app.state.services


# async: FastAPI runs a plain function dependency in a worker thread, a thread hop per request for a check that never
# blocks
async def require_api_key(request: Request, key: Annotated[str | None, Security(_api_key_header)] = None) -> None:
    keys = _services(request).settings.api_keys
    if not keys:
        return
    given = (key or "").encode("utf-8", "replace")
    ok = False
    for candidate in keys:
        # compare against every key, always: the time taken does not say which key was close
        ok |= hmac.compare_digest(given, candidate.encode("utf-8"))
    if not ok:
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid API key; send it in the X-API-Key header",
            headers={"WWW-Authenticate": "APIKey"},
        )


def _model_or_503(request: Request) -> LoadedModel:
    model = _services(request).holder.current
    if model is None:
        raise ApiError(
            503, "not_ready", "no model loaded yet; retry shortly (see /readyz)", headers={"Retry-After": "5"}
        )
    return model


GsdQuery = Annotated[
    float | None,
    Query(
        gt=0.0,
        le=10.0,
        description="ground resolution of the image in m/px, for images that carry none (PNG, JPEG, TIFF "
        "without a CRS); a GeoTIFF's own resolution wins. Omitted: estimated from the image (PARKING_GSD_ESTIMATE, "
        "default true), else the model's typical training resolution; the answer says which (gsd_source)",
    ),
]


async def _infer(
    request: Request, file: UploadFile, with_mask_png: bool, gsd: float | None = None
) -> tuple[LoadedModel, InferenceResult]:
    svc = _services(request)
    # one reference taken here: a hot swap during this request does not change the model it runs on
    model = _model_or_503(request)
    data = await file.read()
    request_id = request.state.request_id
    result = await svc.admission.run(
        run_inference,
        model,
        data,
        file.filename or "",
        svc.settings,
        svc.metrics,
        request_id,
        with_mask_png,
        gsd,
    )
    return model, result


def _drift(request: Request, result: InferenceResult) -> BackgroundTask:
    # the drift row is not part of the answer: queued once the answer has gone, so that neither its features nor
    # the thread computing them hold up the response (docs/experiments/request-path.md)
    return BackgroundTask(_services(request).drift.add_later, result.drift_row, request.state.request_id)


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_api_key)],
    summary="Find parking spaces in one image (PNG, JPEG or GeoTIFF)",
)
async def predict(
    request: Request,
    file: Annotated[UploadFile, File(description="the image; its type is told by content, not by name")],
    include_mask: Annotated[bool, Query(description="add the class mask as a base64 PNG")] = False,
    gsd: GsdQuery = None,
) -> Response:
    model, result = await _infer(request, file, include_mask, gsd)
    pred, image = result.prediction, result.image
    body: dict[str, Any] = {
        "request_id": request.state.request_id,
        "model": {"name": model.name, "version": model.version},
        "width": image.width,
        "height": image.height,
        "free_spaces": pred.free_count,
        "occupied_spaces": pred.occupied_count,
        "occupancy_rate": pred.occupancy_rate,
        "spaces": [s.to_dict() for s in pred.spaces],
        "geojson": result.geojson,
        "gsd": result.gsd.gsd,
        "gsd_source": result.gsd.source,
        "quality": result.quality,
        "timings_ms": result.timings_ms,
    }
    if include_mask:
        body["mask"] = base64.b64encode(result.mask_png or b"").decode("ascii")
    return Response(_ANSWER_JSON.encode(body), media_type="application/json", background=_drift(request, result))


@router.post(
    "/v1/predict/mask",
    responses={200: {"content": {"image/png": {}}, "description": "class mask PNG"}, **ERROR_RESPONSES},
    response_class=Response,
    dependencies=[Depends(require_api_key)],
    summary="Class mask (0 background, 1 free, 2 occupied) as a PNG the size of the input",
)
async def predict_mask(
    request: Request,
    file: Annotated[UploadFile, File(description="the image; its type is told by content, not by name")],
    gsd: GsdQuery = None,
) -> Response:
    model, result = await _infer(request, file, True, gsd)
    return Response(
        result.mask_png,
        media_type="image/png",
        headers={
            "X-Model-Version": model.version,
            "X-Free-Spaces": str(result.prediction.free_count),
            "X-Gsd": "" if result.gsd.gsd is None else str(result.gsd.gsd),
            "X-Gsd-Source": result.gsd.source,
        },
        background=_drift(request, result),
    )


@router.get(
    "/v1/model",
    response_model=ModelInfo,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_api_key)],
    summary="The model being served",
)
async def model_info(request: Request) -> Response:
    _model_or_503(request)
    info = _services(request).holder.describe()
    info.pop("loaded", None)
    return JSONResponse(info)


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: a model is loaded", responses={503: ERROR_RESPONSES[503]})
async def readyz(request: Request) -> Response:
    holder = _services(request).holder
    model = holder.current
    if model is None:
        reason = holder.last_error or "loading"
        return error_response(503, "not_ready", f"no model loaded from {holder.source_label}: {reason}")
    return JSONResponse({"status": "ready", "model": {"name": model.name, "version": model.version}})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(_services(request).metrics.render(), media_type=CONTENT_TYPE)
