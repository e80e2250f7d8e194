"""maintain: a ping (PingSource ragfn-maintain in the cluster, a timer in `ragfn dev`) in; the index's maintenance,
within RAGFN_MAINTENANCE_BUDGET_SECONDS, out as a summary and as Prometheus metrics on GET /metrics
(ragfn.store.maintenance)."""

from ragfn.eventing import events
from ragfn.eventing.publish import StageResult
from ragfn.serve.handler import InboundEvent, cloud_function
from ragfn.serve.runtime import Runtime


@cloud_function("maintain", accepts={events.PING: None}, reply_with_event=False, uses_index=True,
                metrics=lambda runtime: runtime.maintenance.metrics.registry)
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    return StageResult([], runtime.maintenance.run())
