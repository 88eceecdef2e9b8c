"""Call a flow from the CLI and get its report, whatever final state it ended in."""

from __future__ import annotations

from typing import Any


def run_flow(flow, **params: Any) -> Any:
    """``flow(**params)``'s report: the data of its final state, also when that state is Failed (chunks
    that failed are in the report); an exception raised inside the flow is raised again here."""
    state = flow(**params, return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    return data
