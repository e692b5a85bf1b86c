"""The overdue scan: a case whose stage deadline has passed is marked, escalated to the supervisor,
and published as ``case.case.overdue`` — once, however many replicas scan."""

from __future__ import annotations

from sqlalchemy import func, select

from citygrid.auth import Principal
from citygrid.db import transaction_time
from citygrid.runtime import Runtime
from contract.case import CaseOverdue
from services.case import events
from services.case.models import Case, CaseHistory

SCHEDULER = Principal(
    subject="system:overdue-scan", kind="service", name="overdue scan", roles=frozenset({"system"})
)
ESCALATED_TO = "supervisor"


async def escalate_overdue(runtime: Runtime, batch_size: int = 500) -> int:
    async with runtime.uow() as uow:
        session = uow.session
        due = (
            select(Case)
            .where(Case.overdue_at.is_(None), Case.deadline_at.is_not(None), Case.deadline_at < func.now())
            .order_by(Case.deadline_at)
            .limit(batch_size)
            .with_for_update(skip_locked=True)  # another replica's batch is not ours
        )
        cases = list((await session.scalars(due)).all())
        if not cases:
            return 0
        now = await transaction_time(session)
        for case in cases:
            assert case.deadline_at is not None
            assert case.stage is not None
            case.overdue_at = now
            # Escalation changes the case: a new version, so the event is ordered after the last step
            # and a consumer holding that step's version applies it.
            case.updated_at = now
            case.version += 1
            note = f"the {case.stage} stage was due {case.deadline_at.isoformat()}; escalated to the {ESCALATED_TO}"
            session.add(
                CaseHistory(
                    case_id=case.id,
                    action="overdue",
                    from_status=case.status,
                    to_status=case.status,
                    actor=SCHEDULER.subject,
                    actor_name=SCHEDULER.name,
                    note=note,
                    at=now,
                )
            )
            events.record(
                uow,
                CaseOverdue,
                case,
                SCHEDULER,
                note,
                stage=case.stage,
                deadline_at=case.deadline_at,
                escalated_to=ESCALATED_TO,
            )
        return len(cases)
