# Stub of the compiled module (sdk/banditflags/_speedups.c): the fast paths of Client.track() and
# Client.decide().
from typing import Any

def configure(
    flag_type: type, bucketed_type: type, units_type: type, conversions_type: type, otel_trace: Any, /
) -> None: ...
def hash32(text: str, /) -> int: ...
def hash64(text: str, /) -> int: ...

class Tracker:
    def __init__(
        self, client: Any, fallback: Any, conversions: Any, duplicates: Any, tel_forced: bool
    ) -> None: ...
    def __call__(
        self,
        flag_or_decision: Any,
        unit_id: str | int | None = None,
        reward: float = 1.0,
        metric: str | None = None,
    ) -> bool: ...

class Decider:
    def __init__(
        self,
        client: Any,
        tel: Any,
        start_span: Any,
        split_attrs: dict[Any, Any],
        cid_cache: dict[str, str] | None,
        units: Any,
        split: Any,
        span_name: str,
        context_id: str,
    ) -> None: ...
    def __call__(self, flag: Any, unit_id: Any, context: Any, /) -> Any: ...
