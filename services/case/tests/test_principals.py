"""Who acts as whom: service principals act as the platform, people never do, units keep to their cases."""

from __future__ import annotations

import pytest

from services.case.domain.principals import NotYourUnit, NoUnit, acting_roles, check_unit
from services.case.domain.workflow import STEPS, Action, Role


def test_a_service_principal_acts_as_the_platform_and_only_as_that_whatever_roles_it_names():
    assert acting_roles("service", {"system"}) == {Role.SYSTEM}
    assert acting_roles("service", {"supervisor", "handler"}) == {Role.SYSTEM}
    assert acting_roles("service", set()) == {Role.SYSTEM}


def test_a_person_never_acts_as_the_platform_even_when_the_identity_provider_says_so():
    assert acting_roles("person", {"system", "inspector"}) == {Role.INSPECTOR}


def test_an_api_consumer_acts_with_the_roles_an_admin_registered_for_it():
    assert acting_roles("consumer", {"dispatcher", "system"}) == {Role.DISPATCHER, Role.SYSTEM}


def test_role_names_the_workflow_does_not_know_count_for_nothing():
    assert acting_roles("consumer", {"root", "Supervisor", ""}) == frozenset()
    assert acting_roles("person", {"admin"}) == frozenset()


def test_the_platform_registers_merges_dispatches_and_verifies_but_never_does_a_person_s_step():
    platform = acting_roles("service", set())
    steps = {action for action, step in STEPS.items() if not platform.isdisjoint(step.roles)}
    assert steps == {Action.REGISTER, Action.MERGE, Action.DISPATCH, Action.CLOSE, Action.REWORK}


def test_a_unit_s_principal_takes_the_unit_s_steps_only_on_its_own_unit_s_cases():
    handler = frozenset({Role.HANDLER})
    check_unit("accept", case_unit="tianhe-sanitation", actor_unit="tianhe-sanitation", roles=handler)
    with pytest.raises(NotYourUnit) as refused:
        check_unit("accept", case_unit="tianhe-sanitation", actor_unit="yuexiu-municipal", roles=handler)
    assert refused.value.status == 403
    assert refused.value.code == "case.not_your_unit"
    assert refused.value.extra == {"case_unit": "tianhe-sanitation", "your_unit": "yuexiu-municipal"}


def test_a_principal_without_a_unit_is_refused_the_unit_s_steps_and_a_supervisor_is_not_bound():
    with pytest.raises(NoUnit):
        check_unit("handle", case_unit="tianhe-sanitation", actor_unit=None, roles=frozenset({Role.HANDLER}))
    check_unit(
        "handle", case_unit="tianhe-sanitation", actor_unit="yuexiu", roles=frozenset({Role.SUPERVISOR})
    )
    check_unit("handle", case_unit="tianhe-sanitation", actor_unit=None, roles=frozenset({Role.SUPERVISOR}))
