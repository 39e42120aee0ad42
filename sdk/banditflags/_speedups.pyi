# Stub of the compiled module (sdk/banditflags/_speedups.c): the fast path of Client.track().
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
