"""HTTP route of evaluation (综合评价): a period's figures per district, street, unit or category."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError

from citygrid.auth import CurrentPrincipal, district_scope
from citygrid.clock import CityTime
from citygrid.db import DatabaseTimeout, time_limit_of
from citygrid.runtime import RuntimeDep
from contract.common import KnownDistrict
from services.case import evaluation
from services.case.context import EvaluationTimeout
from services.case.domain.evaluation import Counts, Grouping, Period

router = APIRouter(prefix="/v1", tags=["evaluation"])


class EvaluationTimedOut(DatabaseTimeout):
    code = "evaluation.timeout"
    title = "Evaluation took too long"


class FiguresOut(BaseModel):
    """One group's figures; each is defined in docs/evaluation.md. A rate is null when nothing was due."""

    key: str | None = Field(
        description="The district, street, unit or category code; null for the cases without one "
        "(no street resolved, not dispatched yet) and for the total."
    )
    reported: int = Field(description="Cases reported in the period.")
    registered: int = Field(description="Cases registered (立案) in the period.")
    closed: int = Field(description="Cases closed (结案) in the period.")
    due_to_handle: int = Field(
        description="Cases (last) dispatched in the period and now with their unit: not returned, not cancelled."
    )
    handled: int = Field(description="Of those, handled and not sent back (handled or closed now).")
    handled_on_time: int = Field(description="Of the handled, those never handled after a handling deadline.")
    overdue_pending: int = Field(
        description="Of the due, those still unhandled past their handling deadline."
    )
    extended: int = Field(description="Of the due, those with an approved extension.")
    due_to_close: int = Field(description="Cases registered in the period, not cancelled.")
    closed_of_due: int = Field(description="Of those, closed now.")
    reworked: int = Field(description="Of those, sent back for rework at least once.")
    handling_rate: float | None = Field(description="handled / due_to_handle.")
    on_time_handling_rate: float | None = Field(description="handled_on_time / due_to_handle.")
    overdue_pending_rate: float | None = Field(description="overdue_pending / due_to_handle.")
    extension_rate: float | None = Field(description="extended / due_to_handle.")
    closure_rate: float | None = Field(description="closed_of_due / due_to_close.")
    rework_rate: float | None = Field(description="reworked / due_to_close.")
    average_handling_hours: float | None = Field(
        description="Mean hours from dispatch to handled, handled cases."
    )
    median_handling_hours: float | None = Field(description="Median of the same.")

    @classmethod
    def of(cls, key: str | None, counts: Counts) -> FiguresOut:
        return cls(
            key=key,
            reported=counts.reported,
            registered=counts.registered,
            closed=counts.closed,
            due_to_handle=counts.due_to_handle,
            handled=counts.handled,
            handled_on_time=counts.handled_on_time,
            overdue_pending=counts.overdue_pending,
            extended=counts.extended,
            due_to_close=counts.due_to_close,
            closed_of_due=counts.closed_of_due,
            reworked=counts.reworked,
            handling_rate=counts.handling_rate,
            on_time_handling_rate=counts.on_time_handling_rate,
            overdue_pending_rate=counts.overdue_pending_rate,
            extension_rate=counts.extension_rate,
            closure_rate=counts.closure_rate,
            rework_rate=counts.rework_rate,
            average_handling_hours=counts.mean_handling_hours,
            median_handling_hours=counts.median_handling_hours,
        )


class EvaluationOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    period_from: CityTime = Field(alias="from")
    period_to: CityTime = Field(alias="to")
    by: Grouping
    district: str | None = Field(description="The district the evaluation was limited to, if any.")
    total: FiguresOut = Field(description="All the period's cases together (not a sum of the groups' rates).")
    items: list[FiguresOut] = Field(
        description="One entry per group, ordered by key; the cases without one last."
    )


@router.get("/evaluation", operation_id="evaluate_cases", response_model_by_alias=True)
async def evaluate_cases(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    timeout: EvaluationTimeout,
    period_from: Annotated[CityTime, Query(alias="from", description="RFC 3339, inclusive.")],
    period_to: Annotated[
        CityTime, Query(alias="to", description="RFC 3339, exclusive; at most 366 days on.")
    ],
    by: Annotated[Grouping, Query(description="How to group the cases.")] = Grouping.DISTRICT,
    district: Annotated[KnownDistrict | None, Query(description="Only this district's cases.")] = None,
) -> EvaluationOut:
    """综合评价: cases reported, registered and closed in a period, and the handling, on-time,
    overdue-pending, extension, closure and rework rates of the cases due in it, per group."""
    # On the analytics connections, stopped after CITYGRID_EVALUATION_TIMEOUT_SECONDS (below the
    # gateway's upstream timeout, so the client gets this problem, not the gateway's 504, and the
    # query does not run on after its client is gone).
    period = Period.of(period_from, period_to)
    district = district_scope(principal, district)  # a district's centre evaluates its own
    try:
        result = await evaluation.evaluate_within(
            runtime.analytics, period, by, district=district, statement_timeout_seconds=timeout
        )
    except DBAPIError as error:
        if time_limit_of(error) != "statement":
            raise  # a lock or a lost connection: the kit's 503 problem; anything else a 500
        raise EvaluationTimedOut(
            f"the evaluation did not finish within its {timeout:g} s limit and was stopped; "
            "evaluate a shorter period, or one district",
            headers={"Retry-After": "30"},
            retry_after_seconds=30,
            limit="statement",
            timeout_seconds=timeout,
        ) from None
    return EvaluationOut(
        period_from=period.start,
        period_to=period.end,
        by=by,
        district=district,
        total=FiguresOut.of(None, result.total),
        items=[FiguresOut.of(group.key, group.counts) for group in result.groups],
    )
