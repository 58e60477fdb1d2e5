"""The request and response shapes (pydantic): CDS Hooks 2.0 and the questionnaire page's JSON API.

Response models forbid extra keys and no field is nullable, so the OpenAPI schema the app serves says exactly
what a response may hold; the contract tests check every response against it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- CDS Hooks: discovery -------------------------------------------------------------------------------
class Service(_Strict):
    hook: str
    title: str
    description: str
    id: str
    prefetch: dict[str, str]
    usageRequirements: str


class Discovery(_Strict):
    services: list[Service]


# ---- CDS Hooks: a call ----------------------------------------------------------------------------------
class FhirAuthorization(BaseModel):
    access_token: str = Field(min_length=1, max_length=10_000, pattern=r"^[\x21-\x7e]+$")  # goes in a header
    token_type: Literal["Bearer"]
    expires_in: int = Field(ge=0)
    scope: str = Field(max_length=10_000)
    subject: str = Field(max_length=1000)
    patient: str | None = Field(default=None, max_length=64)


class HookRequest(BaseModel):
    hook: str = Field(min_length=1, max_length=100)
    hookInstance: str = Field(min_length=1, max_length=200)
    fhirServer: str | None = Field(default=None, pattern=r"^https?://", max_length=2000)
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any | None] | None = None


class Coding(_Strict):
    system: str
    code: str
    display: str


class Topic(_Strict):
    system: str
    code: str
    display: str


class Source(_Strict):
    label: str
    topic: Topic


class Action(_Strict):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: str | None = None  # a relative reference (spec 2.0: a string)


class Suggestion(_Strict):
    label: str
    uuid: str
    isRecommended: bool
    actions: list[Action]


class Link(_Strict):
    label: str
    url: str
    type: Literal["absolute", "smart"]


class Card(_Strict):
    uuid: str
    summary: str = Field(max_length=139)  # spec: "<140-character"
    detail: str
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding]
    links: list[Link]


class Cards(_Strict):
    cards: list[Card]


# ---- CDS Hooks: feedback ----------------------------------------------------------------------------------
class AcceptedSuggestion(BaseModel):
    id: str = Field(min_length=1, max_length=100)


class ReasonCoding(BaseModel):
    system: str | None = Field(default=None, max_length=500)
    code: str = Field(min_length=1, max_length=200)
    display: str | None = Field(default=None, max_length=500)


class OverrideReason(BaseModel):
    reason: ReasonCoding | None = None
    userComment: str | None = Field(default=None, max_length=2000)


RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"


class FeedbackItem(BaseModel):
    card: str = Field(min_length=1, max_length=100)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = Field(default=None, max_length=50)
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str = Field(pattern=RFC3339)


class Feedback(BaseModel):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=100)


class ProblemDoc(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    field: str | None = None


# ---- the questionnaire page ----------------------------------------------------------------------------------
class EvaluateRequest(BaseModel):
    answers: dict[str, bool | str | None] = Field(default_factory=dict)
    audience: Literal["clinician", "patient"] = "clinician"


class PageQuestion(_Strict):
    fact: str
    question: str
    type: Literal["bool", "enum"]
    values: list[str]
    alarm: bool
    answer: bool | str | None
    why: str | None = None  # what an answer would change (could_escalate)


class PageItem(_Strict):
    label: str
    window: str | None = None
    text: str
    done: bool | None = None


class PageResult(_Strict):
    title: str
    question: str
    urgency: str
    headline: str
    urgency_text: str
    indicator: Literal["info", "warning", "critical"]
    complete: bool
    alarm_unanswered: int
    incomplete_text: str
    scope_text: str
    actions: list[PageItem]
    warnings: list[PageItem]
    why: list[str]
    questions: list[PageQuestion]
    more_questions: list[PageQuestion]
    disclaimer: str
