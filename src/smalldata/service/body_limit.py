"""A bound on every request body, answered like every other error: a JSON 413.

Starlette's own limit answers plain text, and only where the app has not answered first; this one
refuses at once when the declared length is over, and counts what arrives when no length is given.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse


class BodyTooLarge(HTTPException):
    # An HTTPException, so that FastAPI's body parsing passes it on as it is (it turns any other
    # error while reading into a 400) and the app's handler answers it as JSON.
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit // 2**20} MiB: send fewer or smaller files")


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        received, started = 0, False

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        error = BodyTooLarge(self.max_bytes)
        await JSONResponse({"detail": error.detail}, status_code=413)(scope, receive, send)
