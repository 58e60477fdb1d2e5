"""No 5xx on any request: an OpenAPI-driven fuzz (schemathesis) of a real `lumbar-kb serve` on loopback, from the
schema the server itself serves, and the inputs that gave a 500 before (a `status` that is a list or an object).

Every operation of /openapi.json gets generated requests (valid and invalid bodies, path and query values);
each answer must be below 500, and an error answer must be a problem document that names its field or says why.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from .servers import serving
from .test_service import SERVICE, hook_body, problem_ok


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("fuzz")) as served:
        yield served


@pytest.fixture(scope="module")
def live_schema(live):
    return schemathesis.openapi.from_url(f"{live.base}/openapi.json")


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_no_generated_request_gets_a_5xx(live_schema):
    """Per operation, 40 generated requests (schemathesis strategies driven by hypothesis, derandomized so a
    failure repeats); schemathesis's own pytest plugin is not used (it does not load under this pytest)."""
    seen = []
    for operation in operations(live_schema):

        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case):
            response = case.call(timeout=30)
            seen.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
            kind = response.headers.get("content-type") or [""]  # schemathesis: each header a list of values
            if response.status_code >= 400 and kind[0].startswith("application/"):
                problem = response.json()
                assert problem["status"] == response.status_code and problem["detail"]
                assert "Traceback" not in response.text

        run()
    assert len(seen) >= 40 * 3  # every operation was fuzzed, not skipped


def test_the_fuzz_covers_every_operation_the_server_serves(live):
    spec = httpx.get(f"{live.base}/openapi.json").json()
    operations = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert {("POST", "/cds-services/{service_id}"), ("POST", "/cds-services/{service_id}/feedback")} <= operations
    assert ("GET", "/explanations/{card_uuid}") in operations


@pytest.mark.parametrize("status", [["final"], {"code": "final"}, 7, True])
@pytest.mark.parametrize("kind", ["Observation", "QuestionnaireResponse"])
def test_a_status_that_is_not_a_code_is_a_400_naming_it(live, kind, status):
    body = hook_body({"leg_weakness": True})
    body["prefetch"]["observations"]["entry"] = [{"resource": {"resourceType": kind, "id": "x1", "status": status}}]
    response = httpx.post(f"{live.base}{SERVICE}", json=body, timeout=30)
    problem_ok(response, 400, "prefetch.observations.entry[0].resource.status")
