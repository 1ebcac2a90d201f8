"""The survey's public pages (no login: the signed link is the credential) and its JSON twin
``POST /api/surveys/{token}``. Both call :mod:`hub.clients.surveys`."""

from __future__ import annotations

import html

from aiohttp import web
from pydantic import Field

from hub.clients import surveys
from hub.errors import DomainError
from hub.web.contract import ApiRoutes, RequestModel, ResponseModel
from hub.web.keys import HUB_KEY

pages = web.RouteTableDef()
routes = ApiRoutes(tag="surveys")


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><meta name='viewport' content='width=device-width'></head><body>"
             f"<h1>{html.escape(title)}</h1>{body}</body></html>",
        content_type="text/html", status=status)


def _refused(err: DomainError) -> web.Response:
    return _page("Survey", f"<p>{html.escape(err.message)}</p>", err.status)


@pages.get("/surveys/{token}")
async def survey_page(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        async with hub.sessionmaker() as session:
            survey = await surveys.view(session, hub, request.match_info["token"])
    except DomainError as err:
        return _refused(err)
    if survey.answered:
        return _page("Thank you", "<p>You already answered this survey. Thank you!</p>")
    stars = "".join(f"<label><input type='radio' name='rating' value='{i}' required> {i}</label> "
                    for i in range(1, 6))
    return _page(f"How was your visit to {survey.practice_name}?",
                 f"<p>Hello {html.escape(survey.client_name)}.</p><form method='post'>"
                 f"<p>{stars}</p><p><textarea name='comment' maxlength='2000' rows='4' "
                 f"cols='40' placeholder='Anything to add? (optional)'></textarea></p>"
                 f"<p><button type='submit'>Send</button></p></form>")


@pages.post("/surveys/{token}")
async def survey_form(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    form = await request.post()
    raw = str(form.get("rating", ""))
    if not (raw.isascii() and raw.isdigit()):
        return _page("Survey", "<p>Please choose a rating from 1 to 5.</p>", 422)
    try:
        async with hub.transaction() as session:
            await surveys.answer(session, hub, request.match_info["token"], int(raw),
                                 str(form.get("comment", "")))
    except DomainError as err:
        return _refused(err)
    return _page("Thank you", "<p>Thank you for your answer.</p>")


class TokenPath(RequestModel):
    token: str = Field(max_length=2000)


class AnswerIn(RequestModel):
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(None, max_length=2000)


class AnswerOut(ResponseModel):
    rating: int
    comment: str | None
    answered_at: str


@routes.post("/api/surveys/{token}", summary="Answer a survey (the signed link is the "
             "credential)", path_params=TokenPath, body=AnswerIn, response=AnswerOut, status=201,
             errors=(404, 409, 410, 422), public=True, max_body=8 * 1024)
async def answer_survey(request: web.Request, path: TokenPath, body: AnswerIn) -> AnswerOut:
    """A second answer is refused with 409; the first stands."""
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        survey = await surveys.answer(session, hub, path.token, body.rating, body.comment)
    assert survey.answered_at is not None and survey.rating is not None
    return AnswerOut(rating=survey.rating, comment=survey.comment,
                     answered_at=survey.answered_at.isoformat())
