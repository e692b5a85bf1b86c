"""What the case service keeps beside the kit's runtime: the work calendar its deadlines use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.case.catalogue import CalendarHolder


def get_calendars(request: Request) -> CalendarHolder:
    holder: CalendarHolder = request.app.state.calendars
    return holder


Calendars = Annotated[CalendarHolder, Depends(get_calendars)]
