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


def _page(title: str, body: str, status: int = 200, practice: str | None = None) -> web.Response:
    """In the console's look (its stylesheet, landmarks), naming the practice it is for."""
    who = html.escape(practice or "your practice")
    return web.Response(
        text=f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<link rel='icon' href='data:,'><link rel='stylesheet' href='/console/static/console.css'></head>"
             f"<body><header class='top'><p class='brand'>{who}</p></header><main id='main' class='public'>"
             f"<h1>{html.escape(title)}</h1>{body}</main><footer><p>A survey for {who}</p></footer></body></html>",
        content_type="text/html", status=status,
        headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                            "form-action 'self'; base-uri 'none'",
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})


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
        return _page("Thank you", "<p>You already answered this survey. Thank you!</p>",
                     practice=survey.practice_name)
    stars = "".join(f"<label class='check'><input type='radio' name='rating' value='{i}' required> {i}</label> "
                    for i in range(1, 6))
    return _page(f"How was your visit to {survey.practice_name}?",
                 f"<p>Hello {html.escape(survey.client_name)}.</p><form method='post' class='narrow'>"
                 f"<fieldset><legend>Your rating, from 1 (poor) to 5 (excellent)</legend>{stars}</fieldset>"
                 f"<div class='field'><label for='comment'>Anything to add? (optional)</label>"
                 f"<textarea id='comment' name='comment' maxlength='2000' rows='4'></textarea></div>"
                 f"<p><button type='submit'>Send</button></p></form>", practice=survey.practice_name)


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
    """Path parameters of the survey routes: the signed survey token."""
    token: str = Field(max_length=2000)


class AnswerIn(RequestModel):
    """Body of a client's survey answer: a 1-5 rating and an optional comment."""
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(None, max_length=2000)


class AnswerOut(ResponseModel):
    """Response body confirming the recorded survey answer."""
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
