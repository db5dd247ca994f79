"""schemathesis against the service's own OpenAPI spec (/openapi.json), with its webhook secret and API key.

Every operation gets valid and invalid inputs generated from the spec (the webhooks' bodies are in it:
agent/web/app.py documents their models). The service must answer each with something other than a
5xx, and its errors must be the JSON `{"error", "detail"}` shape.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.agent.conftest import Service
from tests.fuzz.conftest import FULL_CASES, PROFILE, Surface, cases

CI_CASES = 300


@pytest.mark.surface("OpenAPI spec (schemathesis)")
def test_every_operation_answers_without_a_server_error(fuzz_service: Service, surface: Surface) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # Operations without inputs have one case; the others share the surface's number of cases.
    with_inputs = [op for op in operations if op.path_parameters or op.query or op.body or op.headers]
    per_operation = math.ceil((FULL_CASES if PROFILE == "full" else CI_CASES) / len(with_inputs))
    assert len(with_inputs) >= 9, [op.label for op in with_inputs]  # the webhooks' bodies are in the spec
    headers = fuzz_service.headers  # the webhook secret for /piopiy/*, an API key for /api/*

    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @cases(ci=per_operation, full=per_operation)
        @given(case=strategy)
        def one(case: Any) -> None:
            surface()
            response = case.call(base_url=fuzz_service.url, headers=headers, timeout=30)
            label = case.operation.label
            assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
            content_type = response.headers.get("content-type") or [""]  # schemathesis: name → values
            if response.status_code >= 400 and content_type[0].startswith("application/json"):
                error = response.json()
                assert isinstance(error.get("error"), str) and "detail" in error, response.text[:300]

        one()
