"""The rules of Flotilla's API that no JSON Schema can state, for run.py beside it.

The OpenAPI document states every bound of a single field (lengths, ranges, patterns, enums,
each launch provider's fields). What it cannot state relates two fields, a field and the
object's stored state, or a field and the kind of token sent. A schema-valid request refused
with 400 for one of exactly these reasons is the API working, not a finding; any other refusal
of a schema-valid request still fails the run. Each rule has its own test in the Rust suite.
"""

import re

import schemathesis
from hypothesis import strategies as st

# A remote write body is snappy-compressed protobuf, which no JSON Schema describes: bytes.
schemathesis.openapi.media_type("application/x-protobuf", st.binary(max_size=4096))

# (operations, error code, message): the refusal's operation, `error.code` and `error.message`.
RULES = [
    # min_size <= max_size, given together or one against the other stored (SPEC 2).
    (r"(POST|PATCH) /v1/groups(/\{id\})?", "invalid_input",
     r"invalid min_size: must be at most max_size \(\d+\), is \d+"),
    # desired_capacity within [min_size, max_size] (SPEC 2.3).
    (r"(POST|PATCH) /v1/groups(/\{id\})?", "invalid_input",
     r"invalid desired_capacity: must lie within \[\d+, \d+\], is \d+"),
    # An adjustment's range depends on its type: a percent within +-1000, an exact capacity
    # not negative (SPEC 2).
    (r"(POST|PATCH) /v1/groups/\{id\}/policies(/\{pid\})?", "invalid_input",
     r"invalid adjustment: (a percent|an exact capacity) must lie within \[-?\d+, \d+\], is -?\d+"),
    # min_adjustment_step belongs to percent policies only (SPEC 2).
    (r"(POST|PATCH) /v1/groups/\{id\}/policies(/\{pid\})?", "invalid_input",
     r"invalid min_adjustment_step: is only allowed with adjustment_type percent"),
    # A policy's type decides its fields: a simple one needs an adjustment and has no steps or
    # warm-up; a step one has steps (ordered, no overlap, no gap) and no adjustment or
    # cooldown of its own (SPEC 2.1).
    (r"(POST|PATCH) /v1/groups/\{id\}/policies(/\{pid\})?", "invalid_input",
     r"invalid adjustment: (a simple policy needs one|belongs to simple policies.*)"),
    (r"(POST|PATCH) /v1/groups/\{id\}/policies(/\{pid\})?", "invalid_input",
     r"invalid steps: (belong to step policies"
     r"|a step policy has 1 to \d+ steps, has \d+"
     r"|step \d+: a step may not leave both bounds null"
     r"|a step (below|above) the threshold needs a (first|last) step with no (lower|upper) bound"
     r"|step \d+: lower \(\S+\) must be below upper \(\S+\)"
     r"|step \d+: only the (first|last) step may have no (lower|upper) bound.*"
     r"|steps \d+ and \d+ (overlap|leave a gap): .*"
     r"|(a percent|an exact capacity) must lie within \[-?\d+, \d+\], is -?\d+)"
     r"|invalid warmup_seconds: belongs to step policies.*"
     r"|invalid cooldown_seconds: belongs to simple policies.*"),
    # A simple or step policy reads its adjustments by an adjustment_type; a target-tracking
    # one has a metric and a target, and none of the other types' fields (SPEC 2.1).
    (r"(POST|PATCH) /v1/groups/\{id\}/policies(/\{pid\})?", "invalid_input",
     r"invalid adjustment_type: a simple or step policy needs one"),
    (r"(POST|PATCH) /v1/groups/\{id\}/policies(/\{pid\})?", "invalid_input",
     r"invalid (metric|target): a target-tracking policy needs (one|one \(or a query\)|a metric and a target)"),
    # A PromQL query needs the operator's --prometheus-url, and replaces the metric (SPEC 5.2).
    (r"(POST|PATCH) /v1/(alarms(/\{aid\})?|groups/\{id\}/policies(/\{pid\})?)", "invalid_input",
     r"invalid query: .*"),
    (r"(POST|PATCH) /v1/groups/\{id\}/policies(/\{pid\})?", "invalid_input",
     r"invalid [a-z_]+: (belongs to target-tracking policies"
     r"|does not belong to target-tracking policies, which follow their target)"),
    (r"(POST|PATCH) /v1/groups/\{id\}/policies(/\{pid\})?", "invalid_input",
     r"invalid activation_threshold: belongs to target_kind total.*"),
    # A target-tracking policy executes at each closed period of its metric (SPEC 2.1).
    (r"POST /v1/groups/\{id\}/policies/\{pid\}/execute", "conflict",
     r"conflict: a target-tracking policy executes at each closed period.*"),
    # A scheduled action (SPEC 2.2): at (in the future) or a recurrence (5 cron fields in an
    # IANA time zone, with a start before its end and an occurrence left), at least one value
    # to set, bounds in order. No schema states a cron grammar or the zone database.
    (r"(POST|PATCH) /v1/groups/\{id\}/schedules(/\{sid\})?", "invalid_input",
     r"invalid (at|start_time|end_time): must be an RFC 3339 time: .*"),
    (r"(POST|PATCH) /v1/groups/\{id\}/schedules(/\{sid\})?", "invalid_input",
     r"invalid at: (must be in the future, is .*"
     r"|a schedule runs at an instant or on a recurrence, not both)"),
    # A time RFC 3339 can write back: 1970 to 9999 (a format date-time states no range).
    (r"(POST|PATCH) /v1/groups/\{id\}/schedules(/\{sid\})?", "invalid_input",
     r"invalid (at|start_time|end_time): must be between 1970-01-01T00:00:00Z and "
     r"9999-12-31T23:59:59Z, is .*"),
    (r"(POST|PATCH) /v1/groups/\{id\}/schedules(/\{sid\})?", "invalid_input",
     r"invalid recurrence: .*"),
    (r"(POST|PATCH) /v1/groups/\{id\}/schedules(/\{sid\})?", "invalid_input",
     r"invalid time_zone: (\".*\" is not an IANA time zone name|belongs to a recurring schedule)"),
    (r"(POST|PATCH) /v1/groups/\{id\}/schedules(/\{sid\})?", "invalid_input",
     r"invalid (start_time|end_time): belongs to a recurring schedule"),
    (r"(POST|PATCH) /v1/groups/\{id\}/schedules(/\{sid\})?", "invalid_input",
     r"invalid end_time: (must be after start_time .*|the recurrence has no occurrence left)"),
    (r"(POST|PATCH) /v1/groups/\{id\}/schedules(/\{sid\})?", "invalid_input",
     r"invalid desired_capacity: a schedule sets at least one of .*"),
    (r"(POST|PATCH) /v1/groups/\{id\}/schedules(/\{sid\})?", "invalid_input",
     r"invalid min_size: must be at most max_size \(\d+\), is \d+"),
    # An orchestrator's URL the HTTP client can send to: a WHATWG URL whose host maps through
    # IDNA and whose port fits (SPEC 6), which no pattern states.
    (r"(POST|PATCH) /v1/groups(/\{id\})?", "invalid_input",
     r"invalid launch\.url: must be an http or https URL with a host, is .*"),
    # Bytes that are not a snappy-compressed WriteRequest (SPEC 5.1).
    (r"POST /v1/write", "invalid_write_request", r".*"),
    # A step policy executed without the breach its step is chosen by (SPEC 2.1).
    (r"POST /v1/groups/\{id\}/policies/\{pid\}/execute", "metric_value_required", r".*"),
    # A pause names at least one direction (SPEC 2.3).
    (r"POST /v1/groups/\{id\}/pause", "invalid_input", r"invalid pause: name a direction to pause.*"),
    # datapoints_to_alarm (M) <= evaluation_periods (N) (SPEC 5).
    (r"(POST|PATCH) /v1/alarms(/\{aid\})?", "invalid_input",
     r"invalid datapoints_to_alarm: must lie within \[1, evaluation_periods \(\d+\)\], is \d+"),
    # With a tenant's token (not a group's metrics token) each sample names its group (SPEC 5).
    (r"POST /v1/metrics", "invalid_sample",
     r"samples\[\d+\]: group_id is required with a tenant's token"),
]


# A 404 for a body's reference to an object the tenant cannot see (SPEC 3), which a stateful
# run reads as "the resource just created is not found" (ST302) when the reference is random.
REFERENCES = [
    (r"POST /v1/groups/\{id\}/receivers", r"(firing|resolved) names no policy of group \S+"),
]


@schemathesis.hook
def filter_failure(context, failure, case, response):
    operation = f"{case.method.upper()} {case.path}"
    if failure.code == "ST302" and response.status_code == 404:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return True
        return not any(re.fullmatch(operations, operation) and re.fullmatch(pattern, message)
                       for operations, pattern in REFERENCES)
    if failure.code != "ST202" or response.status_code != 400:
        return True
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return True
    for operations, code, message in RULES:
        if (re.fullmatch(operations, operation) and error.get("code") == code
                and re.fullmatch(message, error.get("message", ""))):
            return False
    return True
