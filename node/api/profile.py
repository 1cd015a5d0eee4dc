"""`GET /v1/admin/profile?seconds=N[&format=collapsed|speedscope]`: a statistical profile of the
event loop's thread for N seconds (node/profiler.py) while the node keeps serving. Superuser only."""

from __future__ import annotations

import orjson

from ..catalog import Principal
from ..errors import BadRequest
from ..profiler import Profiler
from .http import JSON_HEADERS, Request, Response
from .routes import Route, superuser

PROFILE_SECONDS_MAX = 60
PROFILE_FORMATS = ("collapsed", "speedscope")


def routes() -> list[Route]:
    profiler = Profiler()

    async def profile(request: Request, principal: Principal) -> Response:
        request.only_query(("seconds", "format"))
        seconds = request.query_int("seconds", None, 1, PROFILE_SECONDS_MAX)
        if seconds is None:
            raise BadRequest(f"query parameter 'seconds' is required: 1 to {PROFILE_SECONDS_MAX}")
        form = request.query.get("format", "collapsed")
        if form not in PROFILE_FORMATS:
            raise BadRequest(f"query parameter 'format' must be collapsed or speedscope, got {form!r}")
        result = await profiler.profile_loop(seconds)
        if form == "speedscope":
            name = f"kvstored event loop, {seconds} s, {result.samples} samples"
            return Response(200, orjson.dumps(result.speedscope(name)), list(JSON_HEADERS))
        return Response(200, result.collapsed(), [("content-type", "text/plain; charset=utf-8")])

    return [Route("GET", "/v1/admin/profile", profile, superuser("admin routes"))]
