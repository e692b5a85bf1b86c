"""/metrics of a service and of the gateway: RED metrics by route template, outbox and consumer gauges."""

from __future__ import annotations

import re

from citygrid.testing import wait_until
from tests.test_case_flow import REPORT


async def test_metrics_are_labelled_by_route_template_never_by_raw_path(stack):
    created = await stack.client.post("/api/case/v1/cases", json=REPORT, headers=stack.as_("clerk"))
    case_id = created.json()["id"]
    await stack.client.get(f"/api/case/v1/cases/{case_id}", headers=stack.as_("reader"))
    await stack.client.get(
        "/api/case/v1/cases/00000000-0000-7000-8000-000000000000", headers=stack.as_("reader")
    )

    async def relayed() -> bool:
        text = (await stack.client.get(f"{stack.case_url}/metrics")).text
        return "citygrid_outbox_published_events_total 1.0" in text

    await wait_until(relayed)
    service = (await stack.client.get(f"{stack.case_url}/metrics")).text
    assert 'http_requests_total{method="POST",route="/v1/cases",service="case",status="201"} 1.0' in service
    assert (
        'http_requests_total{method="GET",route="/v1/cases/{case_id}",service="case",status="200"} 1.0'
        in service
    )
    assert (
        'http_requests_total{method="GET",route="/v1/cases/{case_id}",service="case",status="404"} 1.0'
        in service
    )
    assert case_id not in service
    assert re.search(
        r'http_request_duration_seconds_bucket\{le="0.1",method="POST",route="/v1/cases"', service
    )
    for name in (
        "citygrid_outbox_backlog_events",
        "citygrid_outbox_oldest_age_seconds",
        "citygrid_consumer_pending_messages",
        "citygrid_dead_letters_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in service, name
    assert "/healthz" not in service

    assert (await stack.client.get("/metrics")).status_code == 404  # not on the public listener
    gateway = (await stack.client.get(f"{stack.gateway_metrics_url}/metrics")).text
    assert 'route="/api/case/{path:path}",service="gateway",status="201"' in gateway
    assert case_id not in gateway


async def test_an_unknown_path_is_counted_as_unmatched(stack):
    await stack.client.get(f"{stack.case_url}/no/such/path/123")
    service = (await stack.client.get(f"{stack.case_url}/metrics")).text
    assert 'route="<unmatched>",service="case",status="404"' in service
    assert "/no/such/path" not in service
