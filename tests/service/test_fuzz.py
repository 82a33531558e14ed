"""Schemathesis against the OpenAPI description, on SQLite and PostgreSQL: generated requests (valid
and not) must never give a server error, and every answer must be one the description lists, with
the body and content type it says.

Not checked: that every schema-valid request is accepted. The service refuses, by content, what no
schema can say (a file that is not an image, a label of control characters), with a 4xx.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, negative_data_rejection, not_a_server_error,
                                 response_headers_conformance, response_schema_conformance, status_code_conformance)

# Valid and invalid requests mixed; bounded so the suite stays in its time. A deeper run before a
# release: SMALLDATA_FUZZ_EXAMPLES=300 python -m pytest tests/service/test_fuzz.py
EXAMPLES_PER_OPERATION = int(os.environ.get("SMALLDATA_FUZZ_EXAMPLES", "40"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection]


@pytest.mark.slow
def test_no_server_error_and_every_answer_as_described(service):
    schema = schemathesis.openapi.from_asgi("/openapi.json", service.app)
    failures, calls = [], []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=strategies.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                                      operation.as_strategy(GenerationMode.NEGATIVE)))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None, print_blob=False)
        def fuzz(case):
            calls.append(case.call_and_validate(headers=service.headers, checks=CHECKS).status_code)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as error:  # every operation is tried; all failures are shown together
            failures.append(f"{operation.method.upper()} {operation.path}: {str(error)[:1500]}")
    assert not failures, f"{len(failures)} operations failed:\n\n" + "\n\n".join(failures)
    assert len(calls) > 20 * EXAMPLES_PER_OPERATION and {200, 201, 404, 422} <= set(calls)  # it really ran
