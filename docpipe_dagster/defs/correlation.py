"""Every docpipe log line of a step carries its run id, batch key and asset (see logs.py)."""

import functools
import inspect
from collections.abc import Callable
from typing import Any

import dagster as dg

from docpipe_dagster.logs import bound


def _ids(context: dg.AssetExecutionContext) -> dict[str, Any]:
    return {
        "run_id": context.run.run_id,
        "batch_key": context.partition_key if context.has_partition_key else None,
        "asset": context.asset_key.to_user_string(),
    }


def correlated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an asset function (plain or generator) so its logs are bound to the step's ids."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
            with bound(**_ids(context)):
                yield from fn(context, *args, **kwargs)

        return generator

    @functools.wraps(fn)
    def plain(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
        with bound(**_ids(context)):
            return fn(context, *args, **kwargs)

    return plain
